"""POST /v1/responses through a live gateway with the official openai SDK: translated onto
chat deployments of every kind, with usage records, quotas, allowlists and stored responses."""
from __future__ import annotations

import json
import time
from datetime import timedelta

import openai
import pytest
import requests

from gateway.extensions import db
from gateway.models import StoredResponse, utcnow
from gateway.services.accounting import retention
from gateway.services.admin import catalog_admin
from tests.helpers import add_provider, make_key, usage_records

TOOL = {"type": "function", "name": "search", "description": "Search the web",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}
KINDS = {"anthropic": "/v1", "gemini": "/v1beta"}


@pytest.fixture
def sdk(app, live):
    add_provider(app, "p-mock", "mock", None, ["chat=echo-model"])
    with app.app_context():
        catalog_admin.save_price("echo-model", 1.0, 2.0)
    return openai.OpenAI(base_url=live.url + "/v1", api_key=make_key(app), max_retries=0)


def test_plain_answer_names_the_requested_model_and_is_recorded(app, sdk):
    r = sdk.responses.create(model="chat", input="hello there")
    assert r.object == "response" and r.id.startswith("resp_") and r.status == "completed"
    assert r.model == "chat" and r.output_text == "Echo: hello there"
    [item] = r.output
    assert item.type == "message" and item.content[0].type == "output_text"
    assert item.content[0].annotations == []
    assert r.usage.output_tokens == 3 and r.usage.input_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + 3
    [rec] = usage_records(app)
    assert rec.endpoint == "responses" and rec.status == 200 and rec.requested_model == "chat"
    assert rec.prompt_tokens == r.usage.input_tokens and rec.completion_tokens == 3
    assert rec.cost_usd == pytest.approx((rec.prompt_tokens * 1.0 + 3 * 2.0) / 1000)


def test_instructions_become_the_system_turn(app, sdk):
    plain = sdk.responses.create(model="chat", input="hi")
    r = sdk.responses.create(model="chat", input="hi", instructions="Answer in three words exactly.")
    assert r.instructions == "Answer in three words exactly." and r.output_text == "Echo: hi"
    # the mock counts every message's words: the instructions went upstream as a message
    assert r.usage.input_tokens == plain.usage.input_tokens + 5 + 3


def test_function_tool_call_and_its_output(app, sdk):
    r = sdk.responses.create(model="chat", input="weather in Paris", tools=[TOOL])
    [call] = r.output
    assert call.type == "function_call" and call.name == "search"
    assert json.loads(call.arguments) == {"query": "weather in Paris"} and call.call_id
    r2 = sdk.responses.create(model="chat", tools=[TOOL], input=[
        {"role": "user", "content": "weather in Paris"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": '{"temp": 21}'}])
    assert r2.output_text == "Echo: weather in Paris"


def test_stream_events_and_usage(app, sdk):
    events = list(sdk.responses.create(model="chat", input="one two three", stream=True))
    types = [e.type for e in events]
    assert types[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert types[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "Echo: one two three"
    done = events[-1].response
    assert done.status == "completed" and done.model == "chat" and done.output_text == text
    assert done.usage.output_tokens == 4 and done.usage.input_tokens > 0
    [rec] = usage_records(app)
    assert rec.endpoint == "responses" and rec.stream and rec.status == 200
    assert rec.completion_tokens == 4 and not rec.estimated and rec.cost_usd > 0


def test_streamed_function_call(app, sdk):
    events = list(sdk.responses.create(model="chat", input="weather in Paris", tools=[TOOL], stream=True))
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    [done] = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert json.loads(args) == {"query": "weather in Paris"} == json.loads(done.arguments)
    [call] = events[-1].response.output
    assert call.type == "function_call" and call.name == "search" and call.arguments == args


def test_previous_response_id_continues_the_conversation(app, sdk):
    first = sdk.responses.create(model="chat", input="my name is Ada")
    alone = sdk.responses.create(model="chat", input="what is my name", store=False)
    second = sdk.responses.create(model="chat", input="what is my name", previous_response_id=first.id)
    assert second.output_text == "Echo: what is my name" and second.previous_response_id == first.id
    # the stored turn (question and answer) went upstream before the new one
    assert second.usage.input_tokens == alone.usage.input_tokens + (4 + 3) + (5 + 3)
    # and a streamed continuation of the continuation
    events = list(sdk.responses.create(model="chat", input="and again", previous_response_id=second.id,
                                       stream=True))
    assert events[-1].response.usage.input_tokens > second.usage.input_tokens
    assert sdk.responses.retrieve(second.id).output_text == "Echo: what is my name"


def test_unstored_or_foreign_response_is_not_found(app, sdk, live):
    unstored = sdk.responses.create(model="chat", input="hi", store=False)
    mine = sdk.responses.create(model="chat", input="hi")
    other = openai.OpenAI(base_url=live.url + "/v1", api_key=make_key(app, "other"), max_retries=0)
    for client, rid in ((sdk, unstored.id), (other, mine.id)):
        with pytest.raises(openai.NotFoundError) as e:
            client.responses.create(model="chat", input="more", previous_response_id=rid)
        assert e.value.body["message"] == f"Previous response with id '{rid}' not found."
        assert e.value.body["param"] == "previous_response_id"
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(mine.id)
    sdk.responses.delete(mine.id)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(mine.id)
    assert [r.status for r in usage_records(app)] == [200, 200, 404, 404]


def test_store_off_refuses_previous_response_id(app, sdk):
    app.config["RESPONSES_STORE"] = False
    r = sdk.responses.create(model="chat", input="hi")
    assert r.store is False
    with pytest.raises(openai.BadRequestError) as e:
        sdk.responses.create(model="chat", input="more", previous_response_id=r.id)
    assert e.value.body["param"] == "previous_response_id" and "RESPONSES_STORE" in e.value.body["message"]
    with app.app_context():
        assert db.session.query(StoredResponse).count() == 0


def test_stored_items_are_encrypted(app, sdk):
    sdk.responses.create(model="chat", input="a secret sentence")
    with app.app_context():
        [row] = db.session.query(StoredResponse).all()
        assert "secret" not in row.items and "secret" not in row.output
        assert row.items.startswith("gw-enc1:")


def test_builtin_tool_is_refused_by_name(app, sdk):
    with pytest.raises(openai.BadRequestError) as e:
        sdk.responses.create(model="chat", input="news", tools=[{"type": "web_search"}])
    assert "web_search" in e.value.body["message"] and e.value.body["param"] == "tools[0].type"
    [rec] = usage_records(app)
    assert rec.endpoint == "responses" and rec.status == 400


def test_quota_refusal_is_openai_shaped(app, live, sdk):
    key = make_key(app, "small", token_quota=20)
    url, headers = live.url + "/v1/responses", {"Authorization": f"Bearer {key}"}
    statuses = []
    for _ in range(3):
        r = requests.post(url, json={"model": "chat", "input": "one two three four", "max_output_tokens": 5},
                          headers=headers, timeout=10)
        statuses.append(r.status_code)
    assert statuses[0] == 200 and statuses[-1] == 429
    assert r.json()["error"]["type"] == "insufficient_quota"


def test_key_model_allowlist_applies(app, live, sdk):
    client = openai.OpenAI(base_url=live.url + "/v1", api_key=make_key(app, "narrow", models=["other"]),
                           max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as e:
        client.responses.create(model="chat", input="hi")
    assert e.value.body["param"] == "model"
    [rec] = usage_records(app)
    assert rec.endpoint == "responses" and rec.status == 403


@pytest.mark.parametrize("kind", list(KINDS))
def test_vendor_kinds_plain_and_streamed(app, live, mock, kind):
    add_provider(app, f"p-{kind}", kind, mock + KINDS[kind], ["chat=echo-model"])
    client = openai.OpenAI(base_url=live.url + "/v1", api_key=make_key(app), max_retries=0)
    r = client.responses.create(model="chat", input="hello there", instructions="Be brief.",
                                max_output_tokens=50)
    assert r.output_text == "Echo: hello there" and r.usage.output_tokens == 3
    events = list(client.responses.create(model="chat", input="one two", stream=True))
    assert events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "Echo: one two"
    assert events[-1].response.usage.output_tokens == 3
    [call] = client.responses.create(model="chat", input="weather in Paris", tools=[TOOL]).output
    assert call.type == "function_call" and json.loads(call.arguments) == {"query": "weather in Paris"}
    done = client.responses.create(model="chat", tools=[TOOL], input=[
        {"role": "user", "content": "weather in Paris"}, call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": '{"temp": 21}'}])
    assert done.output_text == "Echo: weather in Paris"
    recs = usage_records(app)
    assert [(x.endpoint, x.provider, x.status) for x in recs] == [("responses", f"p-{kind}", 200)] * 4


def test_length_cut_is_incomplete(app, sdk):
    r = sdk.responses.create(model="chat", input="one two three four five", max_output_tokens=2)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    events = list(sdk.responses.create(model="chat", input="one two three four five", max_output_tokens=2,
                                       stream=True))
    assert events[-1].type == "response.incomplete"


def test_upstream_failure_mid_stream_ends_in_response_failed(app, live, mock):
    add_provider(app, "p-openai", "openai", mock + "/v1", ["chat=echo-model"])
    client = openai.OpenAI(base_url=live.url + "/v1", api_key=make_key(app), max_retries=0)
    requests.post(mock + "/_mock/faults", timeout=5, json={"faults": ["cut=3"]})
    events = list(client.responses.create(model="chat", input="one two three four five six", stream=True))
    assert [e.type for e in events[-2:]] == ["error", "response.failed"]
    assert events[-1].response.status == "failed" and events[-1].response.error.message
    assert "response.completed" not in [e.type for e in events]
    [rec] = usage_records(app)
    assert rec.endpoint == "responses" and rec.status == 502 and rec.stream
    with app.app_context():
        assert db.session.query(StoredResponse).count() == 0      # nothing to continue from


def test_client_leaving_mid_stream_is_recorded(app, live, mock):
    add_provider(app, "p-openai", "openai", mock + "/v1", ["chat=echo-model"])
    requests.post(mock + "/_mock/faults", timeout=5, json={"faults": ["chunk_delay=200"]})
    r = requests.post(live.url + "/v1/responses", stream=True, timeout=10,
                      headers={"Authorization": f"Bearer {make_key(app)}"},
                      json={"model": "chat", "input": "one two three four five six seven", "stream": True})
    for line in r.iter_lines():
        if b"output_text.delta" in line:
            break           # the first words arrived: leave
    r.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (rows := usage_records(app)):
        time.sleep(0.1)
    [rec] = rows
    assert rec.endpoint == "responses" and rec.status == 499 and rec.error_type == "client_disconnected"


def test_sdk_stream_helper_and_input_items(app, sdk):
    with sdk.responses.stream(model="chat", input="one two", tools=[TOOL], tool_choice="none") as s:
        final = s.get_final_response()
    assert final.output_text == "Echo: one two" and final.status == "completed"
    items = sdk.responses.input_items.list(final.id)
    assert [(i.type, i.role) for i in items.data] == [("message", "user")]
    later = sdk.responses.create(model="chat", input="three", previous_response_id=final.id)
    assert [i.type for i in sdk.responses.input_items.list(later.id, order="asc").data] == [
        "message", "message", "message"]
    assert sdk.responses.input_items.list(later.id).data[0].content[0].text == "three"


def test_stored_responses_go_with_the_prompt_retention(app, sdk):
    old = sdk.responses.create(model="chat", input="old")
    with app.app_context():
        db.session.get(StoredResponse, old.id).created_at = utcnow() - timedelta(days=31)
        db.session.commit()
    new = sdk.responses.create(model="chat", input="new")
    with app.app_context():
        assert retention.purge(None, 30).responses == 1
        assert [r.id for r in db.session.query(StoredResponse)] == [new.id]
    with pytest.raises(openai.NotFoundError):
        sdk.responses.create(model="chat", input="more", previous_response_id=old.id)


def test_item_references_to_stored_output(app, sdk, live):
    """The Vercel AI SDK refers to earlier answers by item id instead of resending them."""
    first = sdk.responses.create(model="chat", input="my name is Ada")
    [answer] = first.output
    resent = sdk.responses.create(model="chat", input=[
        {"role": "user", "content": "my name is Ada"}, answer.model_dump(exclude_none=True),
        {"role": "user", "content": "what is my name"}])
    referred = sdk.responses.create(model="chat", input=[
        {"role": "user", "content": "my name is Ada"}, {"type": "item_reference", "id": answer.id},
        {"role": "user", "content": "what is my name"}])
    assert referred.usage.input_tokens == resent.usage.input_tokens
    other = openai.OpenAI(base_url=live.url + "/v1", api_key=make_key(app, "other"), max_retries=0)
    with pytest.raises(openai.NotFoundError) as e:
        other.responses.create(model="chat", input=[{"type": "item_reference", "id": answer.id}])
    assert e.value.body["param"] == "input[0].id"


def test_json_schema_output(app, sdk):
    fmt = {"type": "json_schema", "name": "echo", "strict": True,
           "schema": {"type": "object", "properties": {"echo": {"type": "string"}}, "required": ["echo"]}}
    r = sdk.responses.create(model="chat", input="hi there", text={"format": fmt})
    assert json.loads(r.output_text) == {"echo": "hi there"} and r.text.format.name == "echo"


def test_client_fallbacks_apply(app, live, mock):
    add_provider(app, "p-openai", "openai", mock + "/v1", ["chat=echo-model"])
    add_provider(app, "p-mock", "mock", None, ["backup=echo-model"])
    client = openai.OpenAI(base_url=live.url + "/v1", api_key=make_key(app), max_retries=0)
    requests.post(mock + "/_mock/faults", timeout=5, json={"faults": ["fail=503"]})
    r = client.responses.create(model="chat", input="hello", extra_body={"models": ["backup"]})
    assert r.output_text == "Echo: hello" and r.model == "chat"
    [rec] = usage_records(app)
    assert rec.provider == "p-mock" and [a["status"] for a in rec.attempts] == [503, 200]
