"""indexes for the console's usage reads: one covering the usage page's cache and overhead tiles
(created_at, status, cached, overhead_ms, latency_ms, saved_usd; reporting/cache_stats.py), and
(user_id, created_at) so a member's scope (their requests or their keys') is two index searches
instead of a scan of every record

Revision ID: 0004h
Revises: 0003f
Create Date: 2026-12-01 15:00:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0004h'
down_revision = '0004a'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('usage_records', schema=None) as batch_op:
        batch_op.create_index('ix_usage_created_cache',
                              ['created_at', 'status', 'cached', 'overhead_ms', 'latency_ms', 'saved_usd'],
                              unique=False)
        batch_op.create_index('ix_usage_user_created', ['user_id', 'created_at'], unique=False)


def downgrade():
    with op.batch_alter_table('usage_records', schema=None) as batch_op:
        batch_op.drop_index('ix_usage_user_created')
        batch_op.drop_index('ix_usage_created_cache')
