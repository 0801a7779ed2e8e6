"""stored_responses: Responses API answers kept for previous_response_id

Revision ID: 0003a
Revises: 0002f
Create Date: 2026-12-01 12:30:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0003a'
down_revision = '0002f'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'stored_responses',
        sa.Column('id', sa.String(length=64), nullable=False),
        sa.Column('key_id', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('model', sa.String(length=200), nullable=False),
        sa.Column('items', sa.Text(), nullable=False),
        sa.Column('output', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('stored_responses', schema=None) as batch_op:
        batch_op.create_index('ix_stored_responses_created', ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_stored_responses_key_id'), ['key_id'], unique=False)


def downgrade():
    with op.batch_alter_table('stored_responses', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_stored_responses_key_id'))
        batch_op.drop_index('ix_stored_responses_created')
    op.drop_table('stored_responses')
