"""alias history: alias_versions, one row per change of an alias, seeded with each alias's
current target

Revision ID: 0004a
Revises: 0003f
Create Date: 2026-12-01 15:00:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0004a'
down_revision = '0004e'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'alias_versions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('alias', sa.String(length=200), nullable=False),
        sa.Column('target', sa.String(length=200), nullable=True),
        sa.Column('previous_target', sa.String(length=200), nullable=True),
        sa.Column('change', sa.String(length=16), nullable=False),
        sa.Column('actor', sa.String(length=255), nullable=False),
        sa.Column('source', sa.String(length=16), nullable=False),
        sa.Column('at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('alias_versions', schema=None) as batch_op:
        batch_op.create_index('ix_alias_versions_alias', ['alias', 'id'], unique=False)
    # Today's aliases start their history at their current target.
    op.execute("INSERT INTO alias_versions (alias, target, previous_target, change, actor, source, at) "
               "SELECT name, target, NULL, 'set', '', source, updated_at FROM aliases ORDER BY name")


def downgrade():
    with op.batch_alter_table('alias_versions', schema=None) as batch_op:
        batch_op.drop_index('ix_alias_versions_alias')
    op.drop_table('alias_versions')
