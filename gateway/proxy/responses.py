"""POST /v1/responses (OpenAI's Responses API) served by chat deployments, and the stored
responses: GET and DELETE /v1/responses/<id>, continued by `previous_response_id`."""
from __future__ import annotations

import logging

import orjson
from flask import Response, current_app, request

from gateway.auth.security import client_ip
from gateway.errors import InvalidRequest
from gateway.extensions import db
from gateway.proxy import bp, requests, views
from gateway.proxy.dialects import responses as dialect
from gateway.proxy.dialects.responses_stream import ResponsesStream
from gateway.services.accounting import keys, stored_responses
from gateway.services.routing.stream import open_stream

log = logging.getLogger("gateway.responses")


class _Turn:
    """The translation of one request, remembering what storing its answer needs."""

    def __init__(self):
        self.body: dict = {}
        self.items: list = []       # the conversation: earlier turns, then this input
        self.key_id: int | None = None
        self.store = False

    def __call__(self, body: dict, key) -> dict:
        self.body, self.key_id = body, key.id
        self.store = body.get("store", True) is not False and current_app.config["RESPONSES_STORE"]
        history = self._history(body.get("previous_response_id"))
        body = self._resolved(body)
        chat = dialect.to_chat(body, history)
        self.items = [*history, *dialect.input_items(body)]
        return chat

    def _history(self, previous) -> list:
        if previous is None:
            return []
        if not isinstance(previous, str) or not previous:
            raise InvalidRequest("'previous_response_id' must be a string.", param="previous_response_id")
        if not current_app.config["RESPONSES_STORE"]:
            raise InvalidRequest("'previous_response_id' is not available: this gateway does not store "
                                 "responses (RESPONSES_STORE is off). Send the whole conversation in 'input'.",
                                 param="previous_response_id", code="previous_response_not_supported")
        stored = stored_responses.find(current_app, self.key_id, previous)
        if stored is None:
            raise _not_found(previous, "previous_response_id", "Previous response")
        return stored.conversation()

    def _resolved(self, body: dict) -> dict:
        """`body` with each `item_reference` to an output item of a stored response (the Vercel
        AI SDK sends them for earlier turns) replaced by that item."""
        given = body.get("input")
        if not isinstance(given, list) or not any(isinstance(i, dict) and i.get("type") == "item_reference"
                                                   for i in given):
            return body
        items = []
        for i, item in enumerate(given):
            if isinstance(item, dict) and item.get("type") == "item_reference":
                item = self._referenced(item.get("id"), f"input[{i}].id")
            items.append(item)
        return dict(body, input=items)

    def _referenced(self, reference, param: str) -> dict:
        owner = dialect.response_of_item(reference) if isinstance(reference, str) else None
        if owner and current_app.config["RESPONSES_STORE"]:
            stored = stored_responses.find(current_app, self.key_id, owner)
        else:
            stored = None
        found = next((i for i in stored.conversation() if i.get("id") == reference), None) if stored else None
        if found is None:
            raise InvalidRequest(f"Item with id '{str(reference)[:100]}' not found.", param=param,
                                 status=404, code="item_not_found")
        return found

    def keep(self, app, response: dict) -> None:
        """Store the answer when asked (and allowed), within `app`'s context (a stream's end
        runs outside the request's). A failure to store costs the client its continuation,
        not the answer it paid for."""
        if not self.store or response["status"] not in ("completed", "incomplete"):
            return
        with app.app_context():
            try:
                stored_responses.save(app, self.key_id, response, self.items)
            except Exception:
                log.warning("could not store response %s", response["id"], exc_info=True)
                db.session.rollback()


def _not_found(response_id: str, param: str | None, what: str = "Response") -> InvalidRequest:
    return InvalidRequest(f"{what} with id '{response_id[:100]}' not found.", param=param,
                          status=404, code="previous_response_not_found" if param else "not_found")


@bp.post("/responses")
def create_response():
    turn = _Turn()
    req, plan, admission = views._admitted("responses", turn)
    model = turn.body["model"]
    shown = dict(turn.body, store=turn.store)      # what the answer echoes: stored or not
    app = current_app._get_current_object()
    response_id = dialect.new_id("resp_")
    if req.stream:
        inner, headers = open_stream(req, plan, admission)
        events = ResponsesStream(shown, model, response_id, on_end=lambda r: turn.keep(app, r))
        return Response(events.frames(inner), mimetype="text/event-stream",
                        headers={**views.SSE_HEADERS, **admission.rate_headers, **headers})
    data, headers = views.relayed(req, plan, admission)
    answer = dialect.from_chat(orjson.loads(data), model, shown, response_id)
    turn.keep(app, answer)
    return views._json(orjson.dumps(answer), headers=headers)


@bp.get("/responses/<response_id>")
def get_response(response_id: str):
    key = keys.authenticate(requests.secret(request), client_ip())
    stored = stored_responses.find(current_app, key.id, response_id)
    if stored is None:
        raise _not_found(response_id, None)
    return views._json(orjson.dumps(stored.response))


@bp.get("/responses/<response_id>/input_items")
def list_input_items(response_id: str):
    key = keys.authenticate(requests.secret(request), client_ip())
    stored = stored_responses.find(current_app, key.id, response_id)
    if stored is None:
        raise _not_found(response_id, None)
    items = [_listed(item, i) for i, item in enumerate(stored.items)]
    if request.args.get("order", "desc") != "asc":     # OpenAI lists the newest first by default
        items.reverse()
    return views._json(orjson.dumps({"object": "list", "data": items, "has_more": False,
                                     "first_id": items[0]["id"] if items else None,
                                     "last_id": items[-1]["id"] if items else None}))


def _listed(item: dict, index: int) -> dict:
    """An input item as OpenAI lists it: with an id, and text content as a part."""
    item = dict(item, id=item.get("id") or f"item_{index}")
    if item.get("type", "message") == "message" and isinstance(item.get("content"), str):
        kind = "output_text" if item.get("role") == "assistant" else "input_text"
        item.update(type="message", content=[{"type": kind, "text": item["content"]}])
    return item


@bp.delete("/responses/<response_id>")
def delete_response(response_id: str):
    key = keys.authenticate(requests.secret(request), client_ip())
    if not stored_responses.remove(key.id, response_id):
        raise _not_found(response_id, None)
    return views._json(orjson.dumps({"id": response_id, "object": "response", "deleted": True}))
