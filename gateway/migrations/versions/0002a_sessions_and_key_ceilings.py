"""session versions, admin-set key ceilings, team plans

Revision ID: 0002a
Revises: 0001
Create Date: 2026-11-24 10:00:00

users.session_version ends a user's sessions when raised; api_keys.admin_limits holds what an
admin set on a key, the ceiling members edit within; teams.plan_id is the plan of the keys the
team's members make.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0002a'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('session_version', sa.Integer(), server_default='0', nullable=False))

    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('admin_limits', sa.JSON(), nullable=True))

    with op.batch_alter_table('teams', schema=None) as batch_op:
        batch_op.add_column(sa.Column('plan_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_teams_plan_id', 'plans', ['plan_id'], ['id'], ondelete='SET NULL')


def downgrade():
    with op.batch_alter_table('teams', schema=None) as batch_op:
        batch_op.drop_constraint('fk_teams_plan_id', type_='foreignkey')
        batch_op.drop_column('plan_id')

    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_column('admin_limits')

    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('session_version')
