"""plan-wide budget: one spend cap shared by every key on a plan (counter scope plan:<id>)

Revision ID: 0004b
Revises: 0003f
Create Date: 2026-12-01 15:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0004b'
down_revision = '0004d'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('plans', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pool_budget_usd', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('pool_period', sa.String(length=8), nullable=False, server_default='month'))
        batch_op.add_column(sa.Column('pool_timezone', sa.String(length=64), nullable=False, server_default='UTC'))


def downgrade():
    with op.batch_alter_table('plans', schema=None) as batch_op:
        batch_op.drop_column('pool_timezone')
        batch_op.drop_column('pool_period')
        batch_op.drop_column('pool_budget_usd')
