"""deployment_events: circuit-breaker transitions per deployment (the downtime history)

Revision ID: 0004d
Revises: 0003f
Create Date: 2026-12-01 15:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0004d'
down_revision = '0004c'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'deployment_events',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('deployment_id', sa.Integer(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('at', sa.DateTime(), nullable=False),
        sa.Column('reason', sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('deployment_events', schema=None) as batch_op:
        batch_op.create_index('ix_deployment_events_dep_at', ['deployment_id', 'at'], unique=False)
        batch_op.create_index('ix_deployment_events_at', ['at'], unique=False)


def downgrade():
    with op.batch_alter_table('deployment_events', schema=None) as batch_op:
        batch_op.drop_index('ix_deployment_events_at')
        batch_op.drop_index('ix_deployment_events_dep_at')
    op.drop_table('deployment_events')
