"""Responses API answers kept for `previous_response_id`, per API key: the conversation so far
and the response object, encrypted at rest like stored prompts (prompt_log.seal_text), and
erased with them by retention.py (prompt_retention_days)."""
from __future__ import annotations

from dataclasses import dataclass

import orjson
from flask import Flask
from sqlalchemy import delete, select

from gateway.extensions import db
from gateway.models import StoredResponse
from gateway.services.accounting import prompt_log


@dataclass(frozen=True)
class Stored:
    """A kept response: the input items that led to it (earlier turns first) and itself."""
    id: str
    items: list
    response: dict

    def conversation(self) -> list:
        """The items a continuation starts from: the input, then this response's output."""
        return [*self.items, *self.response.get("output", [])]


def save(app: Flask, key_id: int, response: dict, items: list) -> None:
    """Keep `response` (which answered `items`) for the key that asked."""
    fernet = app.extensions["fernet"]
    row = StoredResponse(id=response["id"], key_id=key_id, model=response.get("model") or "",
                         items=prompt_log.seal_text(fernet, orjson.dumps(items).decode()),
                         output=prompt_log.seal_text(fernet, orjson.dumps(response).decode()))
    db.session.add(row)
    db.session.commit()


def find(app: Flask, key_id: int, response_id: str) -> Stored | None:
    """The key's stored response `response_id`; None when absent or another key's."""
    row = db.session.scalar(select(StoredResponse).where(StoredResponse.id == response_id,
                                                         StoredResponse.key_id == key_id))
    if row is None:
        return None
    fernet = app.extensions["fernet"]
    items, output = prompt_log.unseal(fernet, row.items), prompt_log.unseal(fernet, row.output)
    if output == prompt_log.UNREADABLE or items == prompt_log.UNREADABLE:
        return None     # encrypted with a key we no longer have: as good as gone
    return Stored(row.id, orjson.loads(items), orjson.loads(output))


def remove(key_id: int, response_id: str) -> bool:
    """Delete the key's stored response; False when there was none."""
    done = db.session.execute(delete(StoredResponse).where(StoredResponse.id == response_id,
                                                           StoredResponse.key_id == key_id))
    db.session.commit()
    return bool(done.rowcount)
