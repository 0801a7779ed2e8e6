"""redaction modes on keys and policies

Revision ID: 0002b
Revises: 0002a
Create Date: 2026-11-24 10:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0002b'
down_revision = '0002a'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('redact', sa.String(length=8), nullable=True))

    with op.batch_alter_table('policies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('redact', sa.String(length=8), nullable=True))


def downgrade():
    with op.batch_alter_table('policies', schema=None) as batch_op:
        batch_op.drop_column('redact')

    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_column('redact')
