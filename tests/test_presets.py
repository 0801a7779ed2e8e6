"""Vendor presets: `--kind deepseek` and `--kind openai --preset ...` set up a provider with the
vendor's URL and quirks, and the openai_chat adapter follows those quirks on the wire."""
from __future__ import annotations

import orjson
import pytest
import requests
from sqlalchemy import select

from gateway.errors import InvalidRequest
from gateway.extensions import db
from gateway.models import Provider
from gateway.providers import openai_chat, registry
from gateway.providers.base import Target
from gateway.services.admin import catalog_admin
from tests.console_client import Console, make_user
from tests.helpers import add_provider, make_key, usage_records

URLS = {
    "bailian": "https://dashscope.aliyuncs.com/compatible-mode/v1",
    "bailian-singapore": "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
    "byteplus": "https://ark.ap-southeast.bytepluses.com/api/v3",
    "volcengine": "https://ark.cn-beijing.volces.com/api/v3",
    "deepseek": "https://api.deepseek.com",
    "moonshot": "https://api.moonshot.ai/v1",
    "zhipu": "https://open.bigmodel.cn/api/paas/v4",
    "mistral": "https://api.mistral.ai/v1",
    "groq": "https://api.groq.com/openai/v1",
    "together": "https://api.together.xyz/v1",
    "openrouter": "https://openrouter.ai/api/v1",
    "ollama": "http://localhost:11434/v1",
}


def _stored(app, name: str) -> Provider:
    with app.app_context():
        p = db.session.scalar(select(Provider).where(Provider.name == name))
        db.session.expunge(p)
        return p


def test_every_preset_is_a_kind_of_the_openai_format():
    assert list(registry.KINDS)[:6] == ["openai", "azure", "anthropic", "gemini", "bedrock", "mock"]
    assert set(registry.PRESETS) == set(URLS) | {"vllm"}
    for name, spec in registry.PRESETS.items():
        assert registry.ADAPTERS[name] is openai_chat and spec.preset_of == "openai"
        assert spec.default_base_url == URLS.get(name)


@pytest.mark.parametrize("preset", sorted(URLS))
def test_save_provider_applies_each_preset_both_ways(sqlite_app, preset):
    spec = registry.PRESETS[preset]
    with sqlite_app.app_context():
        sqlite_app.config["ALLOW_PRIVATE_UPSTREAMS"] = True         # ollama is on localhost
        short = catalog_admin.save_provider("short", preset, api_key="sk-vendor-key-123456")
        long = catalog_admin.save_provider("long", "OpenAI", preset=preset, api_key="sk-vendor-key-123456")
        assert (short.kind, short.base_url) == (preset, URLS[preset])
        assert (long.kind, long.base_url) == ("openai", URLS[preset])   # the kind as the user chose it
        for key, value in spec.default_options.items():
            assert short.options[key] == value and long.options[key] == value
        assert long.options["preset"] == preset and "preset" not in short.options


def test_a_preset_url_can_be_overridden_and_quirks_survive_later_saves(sqlite_app):
    with sqlite_app.app_context():
        p = catalog_admin.save_provider("ds", "openai", preset="deepseek", base_url="https://proxy.example/v1",
                                        api_key="sk-vendor-key-123456")
        assert p.base_url == "https://proxy.example/v1"
        p = catalog_admin.save_provider("ds", "openai", base_url=p.base_url, models=["deepseek-chat"],
                                        options=dict(p.options))
        assert p.options["max_tokens_field"] == "max_tokens" and p.options["preset"] == "deepseek"


def test_vllm_needs_a_url_but_no_key_and_wrong_presets_are_refused(sqlite_app):
    with sqlite_app.app_context():
        with pytest.raises(InvalidRequest) as e:
            catalog_admin.save_provider("v", "vllm")
        assert e.value.param == "base_url"
        p = catalog_admin.save_provider("v", "vllm", base_url="https://vllm.example/v1")
        assert p.base_url == "https://vllm.example/v1" and not registry.needs_key(p.kind, p.options)
        for kind, preset in (("openai", "nosuch"), ("anthropic", "deepseek")):
            with pytest.raises(InvalidRequest) as e:
                catalog_admin.save_provider("x", kind, preset=preset, api_key="sk-vendor-key-123456")
            assert e.value.param == "preset"


def test_every_preset_through_the_cli(sqlite_app):
    sqlite_app.config["ALLOW_PRIVATE_UPSTREAMS"] = True
    runner = sqlite_app.test_cli_runner()
    for preset, url in URLS.items():
        out = runner.invoke(args=["providers", "add", "--name", f"as-{preset}", "--kind", "openai", "--preset",
                                  preset, "--api-key", "sk-vendor-key-123456"])
        assert out.exit_code == 0 and f"(openai) {url} " in out.output, out.output
        stored = _stored(sqlite_app, f"as-{preset}")
        assert stored.options == {**registry.PRESETS[preset].default_options, "preset": preset}


def test_gateway_yaml_names_a_preset_in_options(sqlite_app, tmp_path):
    from gateway.services.admin import declarative
    config = tmp_path / "gateway.yaml"
    config.write_text("providers:\n  kimi:\n    kind: openai\n    api_key: sk-vendor-key-123456\n"
                      "    options: {preset: moonshot}\n")
    with sqlite_app.app_context():
        declarative.apply(declarative.load(str(config)), out=lambda *_: None)
    p = _stored(sqlite_app, "kimi")
    assert (p.kind, p.base_url, p.options["max_tokens_field"]) == ("openai", URLS["moonshot"], "max_tokens")


def test_a_vendor_refusing_stream_options_never_gets_them(sqlite_app, mock):
    add_provider(sqlite_app, "mi", "mistral", mock + "/v1", ["echo"])
    secret = make_key(sqlite_app)
    body = {"model": "echo", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "a b c"}]}
    r = sqlite_app.test_client().post("/v1/chat/completions", json=body,
                                      headers={"Authorization": f"Bearer {secret}"})
    assert r.status_code == 200 and "[DONE]" in r.text
    sent = requests.get(mock + "/_mock/requests", timeout=5).json()["requests"][-1]["body"]
    assert "stream_options" not in sent
    (record,) = usage_records(sqlite_app)
    assert record.estimated and record.completion_tokens > 0    # no usage came: estimated, not $0


def test_cli_takes_a_preset_as_kind_or_as_option(sqlite_app):
    runner = sqlite_app.test_cli_runner()
    out = runner.invoke(args=["providers", "add", "--name", "qwen", "--kind", "openai", "--preset",
                              "bailian-singapore", "--api-key", "sk-vendor-key-123456", "--models", "qwen-plus"])
    assert out.exit_code == 0, out.output
    assert URLS["bailian-singapore"] in out.output
    out = runner.invoke(args=["providers", "add", "--name", "kimi", "--kind", "moonshot",
                              "--api-key", "sk-vendor-key-123456"])
    assert out.exit_code == 0, out.output
    assert (_stored(sqlite_app, "qwen").kind, _stored(sqlite_app, "kimi").kind) == ("openai", "moonshot")
    assert _stored(sqlite_app, "kimi").base_url == URLS["moonshot"]
    out = runner.invoke(args=["providers", "add", "--name", "bad", "--kind", "openai", "--preset", "nosuch"])
    assert out.exit_code == 1 and "unknown preset 'nosuch'" in out.output
    listed = runner.invoke(args=["providers", "presets"]).output.splitlines()
    assert [row.split("\t")[0] for row in listed] == list(registry.PRESETS)


def test_console_add_provider_lists_presets_and_the_server_applies_them(sqlite_app):
    make_user(sqlite_app, "boss@example.com", "admin")
    c = Console(sqlite_app, "boss@example.com")
    page = c.get("/providers/new").text
    assert "Alibaba Bailian (DashScope, Singapore)" in page and 'value="volcengine"' in page
    r = c.post("/providers", data={"name": "ark", "kind": "volcengine", "base_url": "",
                                   "api_key": "sk-vendor-key-123456", "models": "doubao-seed-1-6-250615"})
    assert r.status_code == 303, r.text
    p = _stored(sqlite_app, "ark")
    assert (p.kind, p.base_url) == ("volcengine", URLS["volcengine"])
    assert p.options["reasoning_field"] == "reasoning_content"


def _target(**options) -> Target:
    return Target("openai", "https://v.example/v1", "k", "m", options)


def test_quirk_options_shape_the_request():
    body = {"messages": [], "max_completion_tokens": 5, "stream_options": {"include_usage": True}}
    plain = orjson.loads(openai_chat.chat_request(_target(), body, True).body)
    assert plain["stream_options"] == {"include_usage": True} and plain["max_completion_tokens"] == 5
    quirky = orjson.loads(openai_chat.chat_request(
        _target(stream_usage="omit", max_tokens_field="max_tokens"), body, True).body)
    assert "stream_options" not in quirky and "max_completion_tokens" not in quirky
    assert quirky["max_tokens"] == 5


def test_usage_inside_the_last_choice_is_read():
    stream = openai_chat.ChatStream(_target(), {})
    chunk = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop",
                          "usage": {"prompt_tokens": 3, "completion_tokens": 4}}]}
    stream.feed(None, orjson.dumps(chunk))
    assert (stream.usage.prompt_tokens, stream.usage.completion_tokens) == (3, 4)


def test_reasoning_content_streams_through_and_counts(sqlite_app, mock):
    add_provider(sqlite_app, "ds", "deepseek", mock + "/v1", ["deepseek-reasoner"])
    secret = make_key(sqlite_app)
    body = {"model": "deepseek-reasoner", "stream": True, "max_completion_tokens": 50,
            "messages": [{"role": "user", "content": "think about it"}]}
    r = sqlite_app.test_client().post("/v1/chat/completions", json=body,
                                      headers={"Authorization": f"Bearer {secret}"})
    assert r.status_code == 200
    events = [orjson.loads(line[6:]) for line in r.text.splitlines()
              if line.startswith("data: {")]
    thinking = "".join(c["choices"][0]["delta"].get("reasoning_content") or ""
                       for c in events if c.get("choices"))
    assert thinking                                            # passed through to the client
    sent = requests.get(mock + "/_mock/requests", timeout=5).json()["requests"][-1]["body"]
    assert sent["max_tokens"] == 50 and "max_completion_tokens" not in sent
    (record,) = usage_records(sqlite_app)
    assert record.status == 200 and not record.estimated     # the upstream's usage was taken


def test_reasoning_counts_for_the_estimate_when_no_usage_comes():
    stream = openai_chat.ChatStream(_target(reasoning_field="reasoning_content"), {})
    stream.feed(None, orjson.dumps({"choices": [{"index": 0, "delta": {"reasoning_content": "abcd"}}]}))
    stream.feed(None, orjson.dumps({"choices": [{"index": 0, "delta": {"content": "ef"}}]}))
    assert stream.text_chars == 6
