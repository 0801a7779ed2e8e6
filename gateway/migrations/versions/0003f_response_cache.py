"""response cache and idempotency: cache_ttl on keys and policies, cached_responses, and the
cached, saved_usd and overhead_ms columns of usage records

Revision ID: 0003f
Revises: 0003c
Create Date: 2026-12-01 12:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0003f'
down_revision = '0003c'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'cached_responses',
        sa.Column('key_hash', sa.String(length=64), nullable=False),
        sa.Column('scope', sa.String(length=80), nullable=False),
        sa.Column('body', sa.LargeBinary(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('expires_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('key_hash'),
    )
    with op.batch_alter_table('cached_responses', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_cached_responses_expires_at'), ['expires_at'], unique=False)

    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cache_ttl', sa.Integer(), nullable=True))

    with op.batch_alter_table('policies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cache_ttl', sa.Integer(), nullable=True))

    with op.batch_alter_table('usage_records', schema=None) as batch_op:
        batch_op.add_column(sa.Column('overhead_ms', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('cached', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('saved_usd', sa.Float(), nullable=False, server_default='0'))


def downgrade():
    with op.batch_alter_table('usage_records', schema=None) as batch_op:
        batch_op.drop_column('saved_usd')
        batch_op.drop_column('cached')
        batch_op.drop_column('overhead_ms')

    with op.batch_alter_table('policies', schema=None) as batch_op:
        batch_op.drop_column('cache_ttl')

    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_column('cache_ttl')

    with op.batch_alter_table('cached_responses', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cached_responses_expires_at'))

    op.drop_table('cached_responses')
