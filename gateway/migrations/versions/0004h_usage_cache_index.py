"""an index covering the usage page's cache and overhead tiles (reporting/cache_stats.py):
created_at, status, cached, overhead_ms, latency_ms, saved_usd of usage records

Revision ID: 0004h
Revises: 0003f
Create Date: 2026-12-01 15:00:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0004h'
down_revision = '0003f'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('usage_records', schema=None) as batch_op:
        batch_op.create_index('ix_usage_created_cache',
                              ['created_at', 'status', 'cached', 'overhead_ms', 'latency_ms', 'saved_usd'],
                              unique=False)


def downgrade():
    with op.batch_alter_table('usage_records', schema=None) as batch_op:
        batch_op.drop_index('ix_usage_created_cache')
