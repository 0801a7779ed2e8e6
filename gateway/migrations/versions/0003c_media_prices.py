"""media endpoints: unit prices on deployments and the price table, units on usage records

Revision ID: 0003c
Revises: 0003a
Create Date: 2026-12-01 12:30:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0003c'
down_revision = '0003a'
branch_labels = None
depends_on = None


def upgrade():
    for table in ('deployments', 'model_prices'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('unit_price', sa.Float(), nullable=True))
            batch_op.add_column(sa.Column('price_unit', sa.String(length=16), nullable=True))
    with op.batch_alter_table('usage_records', schema=None) as batch_op:
        batch_op.add_column(sa.Column('units', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('unit', sa.String(length=16), nullable=True))


def downgrade():
    with op.batch_alter_table('usage_records', schema=None) as batch_op:
        batch_op.drop_column('unit')
        batch_op.drop_column('units')
    for table in ('model_prices', 'deployments'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('price_unit')
            batch_op.drop_column('unit_price')
