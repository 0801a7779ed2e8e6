"""Request logs: the rows behind the usage charts, a page at a time."""
from __future__ import annotations

from flask import current_app
from sqlalchemy import select

from gateway.extensions import db
from gateway.models import ApiKey, UsageRecord
from gateway.services.accounting import key_scope, prompt_log
from gateway.services.reporting.filters import UsageFilter, conditions, visible


def page(f: UsageFilter, page: int = 1, per_page: int = 50) -> tuple[list[UsageRecord], bool]:
    """The filter's records, newest first, and whether more follow."""
    rows = db.session.scalars(select(UsageRecord).where(*conditions(f))
                              .order_by(UsageRecord.created_at.desc(), UsageRecord.id.desc())
                              .limit(per_page + 1).offset((page - 1) * per_page)).all()
    return rows[:per_page], len(rows) > per_page


def find(record_id: int, owner: key_scope.Owner | None) -> tuple[UsageRecord, ApiKey | None] | None:
    """One record and its key (while the key exists), if `owner` may see the record."""
    row = db.session.scalar(select(UsageRecord).where(UsageRecord.id == record_id, *visible(owner)))
    if row is None:
        return None
    return row, db.session.get(ApiKey, row.key_id) if row.key_id else None


def transcript(row: UsageRecord) -> tuple[str | None, str | None]:
    """The record's stored prompt and answer, decrypted (rows stored before encryption as they are)."""
    fernet = current_app.extensions["fernet"]
    return prompt_log.unseal(fernet, row.request_body), prompt_log.unseal(fernet, row.response_text)
