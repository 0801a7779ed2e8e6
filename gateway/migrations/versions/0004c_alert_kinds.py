"""alert kinds: token, health and per-key alerts with a message, who may see them, resolution
and acknowledgement; once per scope, kind, threshold and period

Revision ID: 0004c
Revises: 0003f
Create Date: 2026-12-01 15:00:00

Existing rows are spend alerts (kind defaults to "spend"). The old unique constraint on
(scope, period_start, threshold) becomes one that includes the kind.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0004c'
down_revision = '0003f'
branch_labels = None
depends_on = None

# SQLite keeps 0001's unique constraint unnamed: batch mode names it on reflection.
NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}
OLD_UNIQUE_PG = "alerts_scope_period_start_threshold_key"


def _old_unique() -> str:
    """The name of the (scope, period_start, threshold) constraint: Postgres's own, a downgrade's,
    or (unnamed on SQLite) the one NAMING gives it."""
    for uq in sa.inspect(op.get_bind()).get_unique_constraints('alerts'):
        if uq['column_names'] == ['scope', 'period_start', 'threshold']:
            return uq['name'] or 'uq_alerts_scope'
    return OLD_UNIQUE_PG


def upgrade():
    sqlite = op.get_bind().dialect.name == "sqlite"
    old = _old_unique()
    with op.batch_alter_table('alerts', schema=None, naming_convention=NAMING if sqlite else None) as batch_op:
        batch_op.drop_constraint(old, type_="unique")
        batch_op.add_column(sa.Column('kind', sa.String(length=16), nullable=False, server_default='spend'))
        batch_op.add_column(sa.Column('value', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('limit_value', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('message', sa.String(length=500), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('key_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('team_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('resolved_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('acknowledged_at', sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column('acknowledged_by', sa.String(length=255), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('email_status', sa.String(length=64), nullable=False, server_default=''))
        batch_op.create_unique_constraint('uq_alerts_once', ['scope', 'kind', 'period_start', 'threshold'])
        batch_op.create_index('ix_alerts_open', ['acknowledged', 'resolved_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_alerts_key_id'), ['key_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_alerts_team_id'), ['team_id'], unique=False)


def downgrade():
    op.execute("DELETE FROM alerts WHERE kind <> 'spend'")
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_alerts_team_id'))
        batch_op.drop_index(batch_op.f('ix_alerts_key_id'))
        batch_op.drop_index('ix_alerts_open')
        batch_op.drop_constraint('uq_alerts_once', type_='unique')
        for name in ('email_status', 'acknowledged_by', 'acknowledged_at', 'resolved_at', 'team_id', 'key_id',
                     'message', 'limit_value', 'value', 'kind'):
            batch_op.drop_column(name)
        batch_op.create_unique_constraint(OLD_UNIQUE_PG, ['scope', 'period_start', 'threshold'])
