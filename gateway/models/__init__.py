"""Database models, one module per area; every model is importable from here.
Times are naive UTC (SQLite keeps no zone); see utcnow()."""
from __future__ import annotations

from gateway.models.accounts import ROLES, ApiKey, LoginFailure, Plan, TagBudget, Team, User  # noqa: F401
from gateway.models.admin import AuditLog, Setting  # noqa: F401
from gateway.models.catalog import Alias, AliasVersion, Deployment, ModelPrice, Policy, Provider  # noqa: F401
from gateway.models.clock import utcnow  # noqa: F401
from gateway.models.ledger import Alert, QuotaCounter, Reservation  # noqa: F401
from gateway.models.usage import (ROLLUP_BUCKETS, CachedResponse, DeploymentEvent, StoredResponse,  # noqa: F401
                                  UsageHourly, UsageRecord)
