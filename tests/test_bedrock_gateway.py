"""The gateway in front of AWS Bedrock: OpenAI SDK -> gateway -> the mock's Converse and
ConverseStream (signatures checked), the region plumbing, and the CLI contract."""
from __future__ import annotations

import json

import openai
import pytest
import requests
from openai import OpenAI

from gateway.errors import InvalidRequest
from gateway.mock_upstream import bedrock as mock_bedrock
from gateway.models import Provider
from gateway.providers import registry
from gateway.services.admin import catalog_admin
from gateway.services.routing.catalog import routes_for
from tests.console_client import Console, make_user
from tests.helpers import LiveServer, make_key, usage_records

MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
PROFILE = "us." + MODEL
KEY = f"{mock_bedrock.ACCESS_KEY_ID}:{mock_bedrock.SECRET_ACCESS_KEY}"
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


@pytest.fixture
def gateway(sqlite_app):
    server = LiveServer(sqlite_app)
    yield server
    server.stop()


def add_bedrock(app, mock, models, name="aws", api_key=KEY, region="us-east-1"):
    with app.app_context():
        catalog_admin.save_provider(name, "bedrock", base_url=mock, api_key=api_key, region=region,
                                    models=models)


def sdk(gateway) -> OpenAI:
    return OpenAI(base_url=gateway.url + "/v1", api_key=make_key(gateway.app), max_retries=0)


def seen(mock) -> list[dict]:
    return requests.get(mock + "/_mock/requests", timeout=5).json()["requests"]


def test_chat_through_bedrock_is_signed_and_billed(gateway, mock):
    app = gateway.app
    add_bedrock(app, mock, [f"claude={MODEL}"])
    with app.app_context():
        catalog_admin.save_price(MODEL, 0.003, 0.015)
    out = sdk(gateway).chat.completions.create(model="claude", messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}])
    assert out.choices[0].message.content == "Echo: hello there"
    assert out.choices[0].finish_reason == "stop"
    assert (out.usage.prompt_tokens, out.usage.completion_tokens) == (10, 3)
    [req] = seen(mock)
    assert req["path"] == f"/model/{MODEL}/converse"
    assert req["headers"]["authorization"].startswith("AWS4-HMAC-SHA256")
    assert req["body"]["system"] == [{"text": "Be brief."}]
    [rec] = usage_records(app)
    assert (rec.status, rec.provider, rec.upstream_model, rec.prompt_tokens, rec.completion_tokens) == (
        200, "aws", MODEL, 10, 3)
    assert not rec.estimated
    assert rec.cost_usd == pytest.approx((10 * 0.003 + 3 * 0.015) / 1000)


def test_stream_through_bedrock_relays_event_stream_as_sse(gateway, mock):
    add_bedrock(gateway.app, mock, [f"claude={PROFILE}"])
    chunks = list(sdk(gateway).chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "one two three"}], stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: one two three"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.completion_tokens == 4
    assert seen(mock)[0]["path"] == f"/model/{PROFILE}/converse-stream"
    [rec] = usage_records(gateway.app)
    assert (rec.status, rec.stream, rec.completion_tokens, rec.estimated) == (200, True, 4, False)


def test_a_cut_event_stream_ends_with_an_error_and_one_record(gateway, mock):
    add_bedrock(gateway.app, mock, ["claude=echo+cut=2"])
    got = []
    with pytest.raises(openai.APIError):
        for chunk in sdk(gateway).chat.completions.create(
                model="claude", messages=[{"role": "user", "content": "one two three"}], stream=True):
            got.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(got) == "Echo: one"
    [rec] = usage_records(gateway.app)
    assert rec.status >= 500 and rec.stream and rec.estimated


def test_tools_and_images_through_bedrock(gateway, mock):
    add_bedrock(gateway.app, mock, [f"claude={MODEL}"])
    tool = {"type": "function", "function": {"name": "top_song", "parameters": {
        "type": "object", "properties": {"sign": {"type": "string"}}}}}
    client = sdk(gateway)
    out = client.chat.completions.create(model="claude", tools=[tool], messages=[{"role": "user", "content": [
        {"type": "text", "text": "Top song on WZPZ?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]}])
    [call] = out.choices[0].message.tool_calls
    assert out.choices[0].finish_reason == "tool_calls" and call.function.name == "top_song"
    assert json.loads(call.function.arguments) == {"query": "Top song on WZPZ?"}
    body = seen(mock)[0]["body"]
    assert body["messages"][0]["content"][1] == {"image": {"format": "png", "source": {"bytes": PNG}}}
    assert body["toolConfig"]["tools"][0]["toolSpec"]["name"] == "top_song"
    chunks = list(client.chat.completions.create(model="claude", tools=[tool], stream=True,
                                                  messages=[{"role": "user", "content": "Top song?"}]))
    parts = [p for c in chunks if c.choices for p in c.choices[0].delta.tool_calls or ()]
    assert parts[0].function.name == "top_song"
    assert json.loads("".join(p.function.arguments for p in parts)) == {"query": "Top song?"}


def test_throttling_fails_over_to_the_next_deployment(gateway, mock):
    add_bedrock(gateway.app, mock, [f"claude={MODEL}"], name="one")
    add_bedrock(gateway.app, mock, [f"claude={PROFILE}"], name="two", region="eu-west-1")
    requests.post(mock + "/_mock/faults", json={"faults": ["fail=429"]}, timeout=5)   # whichever goes first
    out = sdk(gateway).chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}])
    assert out.choices[0].message.content == "Echo: hi"
    [rec] = usage_records(gateway.app)
    assert [a["status"] for a in rec.attempts] == [429, 200]
    assert rec.attempts[0]["provider"] != rec.attempts[1]["provider"] == rec.provider


@pytest.mark.parametrize("upstream, status, error_class", [
    ("echo+fail=429", 429, openai.RateLimitError), ("echo+fail=400", 400, openai.BadRequestError)])
def test_bedrock_errors_reach_the_client(gateway, mock, upstream, status, error_class):
    add_bedrock(gateway.app, mock, [f"claude={upstream}"])
    with pytest.raises(error_class) as caught:
        sdk(gateway).chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == status
    assert "mock failure" in caught.value.message
    assert usage_records(gateway.app)[-1].status == status


@pytest.mark.parametrize("api_key, upstream_status", [
    (f"{mock_bedrock.ACCESS_KEY_ID}:wrong-secret", 401),    # InvalidSignatureException (a 403 on the wire)
    ("AKIAUNKNOWN000000000:whatever", 401),                  # UnrecognizedClientException
    ("ABSK-not-the-key", 401)])                             # a bearer API key Bedrock does not know
def test_bad_credentials_are_the_gateways_problem_not_the_clients(gateway, mock, api_key, upstream_status):
    add_bedrock(gateway.app, mock, [f"claude={MODEL}"], api_key=api_key)
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(gateway).chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 502
    assert caught.value.body["code"] == "upstream_auth_failed"
    [rec] = usage_records(gateway.app)
    assert rec.attempts[-1]["status"] == upstream_status


def test_access_denied_stays_403_upstream(gateway, mock):
    add_bedrock(gateway.app, mock, ["claude=echo+fail=403"])
    with pytest.raises(openai.APIStatusError):
        sdk(gateway).chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}])
    assert usage_records(gateway.app)[-1].attempts[-1]["status"] == 403


def test_bearer_api_key(gateway, mock):
    add_bedrock(gateway.app, mock, [f"claude={PROFILE}"], api_key=mock_bedrock.API_KEY)
    out = sdk(gateway).chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}])
    assert out.choices[0].message.content == "Echo: hi"
    assert seen(mock)[0]["headers"]["authorization"] == "Bearer ..." + mock_bedrock.API_KEY[-4:]


def test_test_connection_signs_bedrock_requests(sqlite_app, mock):
    from gateway.services.routing import probe
    with sqlite_app.app_context():
        result = probe.probe_provider("bedrock", mock, KEY, MODEL, None, region="eu-west-1")
        bad = probe.probe_provider("bedrock", mock, KEY.replace(":", ":x"), MODEL, None, region="eu-west-1")
    assert result.ok, result
    assert not bad.ok
    assert seen(mock)[0]["path"] == f"/model/{MODEL}/converse"


# --- regions, saving, the CLI and the console ---------------------------------------------------

def test_region_builds_the_url_and_a_deployment_region_overrides_it(sqlite_app):
    with sqlite_app.app_context():
        p = catalog_admin.save_provider("aws", "bedrock", api_key=KEY, region="us-east-1",
                                        models=[f"claude={MODEL}"])
        url = p.base_url
        assert url == "https://bedrock-runtime.us-east-1.amazonaws.com"
        catalog_admin.save_deployment("claude-eu", "aws", MODEL, region="eu-central-1")
        [us] = routes_for("claude")
        [eu] = routes_for("claude-eu")
        assert (us.target.base_url, us.target.region) == (url, "us-east-1")
        assert (eu.target.base_url, eu.target.region) == (
            "https://bedrock-runtime.eu-central-1.amazonaws.com", "eu-central-1")
        p = catalog_admin.save_provider("aws", "bedrock", api_key=KEY, region="eu-west-3",
                                        base_url="https://bedrock-runtime.us-east-1.amazonaws.com")
        assert p.base_url == "https://bedrock-runtime.eu-west-3.amazonaws.com"     # followed the region


@pytest.mark.parametrize("region", ["", "us-east-1.evil.example/#", "US EAST"])
def test_a_bedrock_provider_needs_a_real_region_or_a_url(sqlite_app, region):
    with sqlite_app.app_context(), pytest.raises(InvalidRequest) as caught:
        catalog_admin.save_provider("aws", "bedrock", api_key=KEY, region=region, models=[MODEL])
    assert caught.value.param == "region"
    assert registry.resolve_endpoint("bedrock", "https://vpce.example/bedrock", None)[0] == (
        "https://vpce.example/bedrock")


def test_embedding_deployments_are_refused_on_bedrock(sqlite_app):
    with sqlite_app.app_context():
        with pytest.raises(InvalidRequest, match="chat models only"):
            catalog_admin.save_provider("aws", "bedrock", api_key=KEY, region="us-east-1",
                                        embedding_models=["amazon.titan-embed-text-v2:0"])
        catalog_admin.save_provider("aws", "bedrock", api_key=KEY, region="us-east-1")
        with pytest.raises(InvalidRequest, match="chat models only"):
            catalog_admin.save_deployment("emb", "aws", "amazon.titan-embed-text-v2:0", mode="embedding")


def test_cli_adds_a_bedrock_provider_with_colons_in_model_ids(sqlite_app):
    runner = sqlite_app.test_cli_runner()
    out = runner.invoke(args=["providers", "add", "--name", "aws", "--kind", "bedrock", "--region", "us-east-1",
                              "--api-key", KEY, "--models", f"claude={MODEL},{PROFILE}"])
    assert out.exit_code == 0, out.output
    assert "https://bedrock-runtime.us-east-1.amazonaws.com" in out.output
    assert mock_bedrock.SECRET_ACCESS_KEY not in out.output
    with sqlite_app.app_context():
        p = catalog_admin.find_provider("aws")
        assert (p.kind, p.region) == ("bedrock", "us-east-1")
        assert sorted((d.model, d.upstream_model) for d in p.deployments) == [
            ("claude", MODEL), (PROFILE, PROFILE)]
    out = runner.invoke(args=["providers", "add", "--name", "vpc", "--kind", "bedrock", "--region", "eu-west-1",
                              "--api-key", KEY, "--base-url", "https://bedrock.vpce.example",
                              "--models", MODEL])
    assert out.exit_code == 0, out.output
    with sqlite_app.app_context():
        p = catalog_admin.find_provider("vpc")
        assert (p.base_url, p.region) == ("https://bedrock.vpce.example", "eu-west-1")
        assert isinstance(p, Provider)


def test_console_form_offers_bedrock_with_a_region(sqlite_app):
    make_user(sqlite_app, "admin@example.com", "admin")
    page = Console(sqlite_app, "admin@example.com").get("/providers/new").get_data(as_text=True)
    assert 'value="bedrock"' in page and 'name="region"' in page and "us-east-1" in page
    assert "https://bedrock-runtime.{region}.amazonaws.com" in page     # the Base URL placeholder pattern
