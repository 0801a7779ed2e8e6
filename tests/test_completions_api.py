"""Legacy POST /v1/completions through a live gateway with the official openai SDK: one prompt
as one chat turn, answered as text_completion objects, with usage records and the refusals."""
from __future__ import annotations

import openai
import pytest

from tests.helpers import add_provider, make_key, usage_records


@pytest.fixture
def sdk(app, live):
    add_provider(app, "p-mock", "mock", None, ["chat=echo-model"])
    return openai.OpenAI(base_url=live.url + "/v1", api_key=make_key(app), max_retries=0)


def test_plain_completion(app, sdk):
    r = sdk.completions.create(model="chat", prompt="say hello", max_tokens=20, temperature=0)
    assert r.object == "text_completion" and r.id.startswith("cmpl-") and r.model == "chat"
    [choice] = r.choices
    assert choice.text == "Echo: say hello" and choice.finish_reason == "stop" and choice.logprobs is None
    assert r.usage.completion_tokens == 3 and r.usage.prompt_tokens == 2 + 3
    [rec] = usage_records(app)
    assert rec.endpoint == "completions" and rec.status == 200 and rec.requested_model == "chat"
    assert (rec.prompt_tokens, rec.completion_tokens) == (5, 3)


def test_a_one_prompt_list_and_stop(app, sdk):
    r = sdk.completions.create(model="chat", prompt=["one two"], stop=["\n"], max_tokens=2)
    assert r.choices[0].text == "Echo: one" and r.choices[0].finish_reason == "length"


def test_streamed_completion(app, sdk):
    chunks = list(sdk.completions.create(model="chat", prompt="one two three", stream=True))
    assert all(c.object == "text_completion" and c.model == "chat" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Echo: one two three"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert len({c.id for c in chunks}) == 1
    [rec] = usage_records(app)
    assert rec.endpoint == "completions" and rec.stream and rec.completion_tokens == 4 and not rec.estimated


def test_streamed_usage_when_asked(app, sdk):
    chunks = list(sdk.completions.create(model="chat", prompt="a b", stream=True,
                                         stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 3


@pytest.mark.parametrize("extra, param", [
    ({"prompt": [1, 2, 3]}, "prompt"), ({"prompt": ["a", "b"]}, "prompt"), ({"echo": True}, "echo"),
    ({"suffix": "end"}, "suffix"), ({"logprobs": 2}, "logprobs"), ({"best_of": 3}, "best_of"),
])
def test_refused_settings_name_their_param(app, sdk, extra, param):
    with pytest.raises(openai.BadRequestError) as e:
        sdk.completions.create(**{"model": "chat", "prompt": "hi", **extra})
    assert e.value.body["param"] == param and e.value.body["type"] == "invalid_request_error"
    [rec] = usage_records(app)
    assert rec.endpoint == "completions" and rec.status == 400
