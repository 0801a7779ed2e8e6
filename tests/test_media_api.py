"""Images, audio, moderations and rerank through a live gateway with the official openai SDK:
routing by mode, usage records with units and cost, budgets, failover, save-time checks."""
from __future__ import annotations

import base64
import io
import wave

import openai
import pytest
import requests
from console_client import Console, make_user
from sqlalchemy import select

from gateway.errors import InvalidRequest
from gateway.extensions import db
from gateway.models import QuotaCounter
from gateway.services.admin import catalog_admin
from tests.helpers import make_key, records_when_written, usage_records

UPSTREAM_KEY = "sk-upstream-secret-123456"
MEDIA = {"image": ["img=dall-e-3"], "audio": ["whisper=whisper-1", "tts=tts-1"],
         "moderation": ["mod=omni-moderation-latest"], "rerank": ["rr=rerank-english-v3.0"]}


def wav(seconds: float, rate: int = 8000) -> bytes:
    """A silent 16-bit mono WAV of `seconds`."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * int(seconds * rate))
    return out.getvalue()


def provider(app, name: str, base_url: str, media: dict, kind: str = "openai", models=("chat=echo-model",)):
    with app.app_context():
        catalog_admin.save_provider(name, kind, base_url=base_url, api_key=UPSTREAM_KEY,
                                    models=list(models), media_models=media)


@pytest.fixture
def app(sqlite_app):
    """SQLite only: the reservations are the token requests' (tested on both databases)."""
    return sqlite_app


@pytest.fixture
def sdk(app, live, mock):
    provider(app, "p-openai", mock + "/v1", MEDIA)
    client = openai.OpenAI(base_url=live.url + "/v1", api_key=make_key(app), max_retries=0)
    client.live = live
    return client


def test_images_generate(app, sdk):
    r = sdk.images.generate(model="img", prompt="a red square", n=2, size="1024x1024", quality="standard",
                            response_format="b64_json")
    assert len(r.data) == 2 and base64.b64decode(r.data[0].b64_json).startswith(b"\x89PNG")
    r = sdk.images.generate(model="img", prompt="a blue square")
    assert r.data[0].url.startswith("https://")
    first, second = usage_records(app)
    assert first.endpoint == "images" and first.status == 200 and first.upstream_model == "dall-e-3"
    assert (first.units, first.unit) == (2, "image") and first.cost_usd == pytest.approx(0.08)
    assert first.total_tokens == 0 and not first.estimated
    assert second.units == 1 and second.cost_usd == pytest.approx(0.04)


def test_speech_streams_audio_bytes(app, sdk):
    text = "Hello from the gateway, spoken aloud."
    audio = sdk.audio.speech.create(model="tts", voice="alloy", input=text)
    assert audio.content.startswith(b"ID3") and b"\xff\xfb" in audio.content
    with sdk.audio.speech.with_streaming_response.create(model="tts", voice="nova", input=text * 3,
                                                         response_format="mp3") as resp:
        assert resp.headers["content-type"] == "audio/mpeg"
        chunks = list(resp.iter_bytes())
    streamed = b"".join(chunks)
    assert streamed.startswith(b"ID3") and len(streamed) > len(audio.content)
    one, three = usage_records(app)
    assert one.endpoint == "speech" and one.status == 200 and one.provider == "p-openai"
    assert (one.units, one.unit) == (len(text), "character")
    assert one.cost_usd == pytest.approx(len(text) / 1000 * 0.015)
    assert three.units == 3 * len(text) and three.ttft_ms is not None


def test_transcription_bills_the_stated_duration(app, sdk, mock):
    audio = wav(1.5)
    r = sdk.audio.transcriptions.create(model="whisper", file=("talk.wav", audio, "audio/wav"),
                                        response_format="verbose_json", language="en", temperature=0.2)
    assert r.text == "Mock transcribe of talk.wav." and r.duration == 1.5
    sent = requests.get(mock + "/_mock/requests", timeout=5).json()["requests"][-1]
    assert sent["path"] == "/v1/audio/transcriptions" and sent["body"]["model"] == "whisper-1"
    assert sent["body"]["file"]["size"] == len(audio) and sent["body"]["language"] == "en"
    assert UPSTREAM_KEY[-4:] in sent["headers"]["authorization"]
    text = sdk.audio.transcriptions.create(model="whisper", file=("talk.wav", audio), response_format="text")
    assert text.strip() == "Mock transcribe of talk.wav."
    verbose, plain = usage_records(app)
    assert verbose.endpoint == "transcriptions" and (verbose.units, verbose.unit) == (1.5, "second")
    assert not verbose.estimated and verbose.cost_usd == pytest.approx(1.5 / 60 * 0.006)
    # text states no length: estimated from the file size, and marked so
    assert plain.estimated and plain.units == pytest.approx(len(audio) / 16000, abs=0.001)


def test_translation(app, sdk):
    r = sdk.audio.translations.create(model="whisper", file=("fr.wav", wav(1.2), "audio/wav"))
    assert r.text == "Mock translate of fr.wav."
    [rec] = usage_records(app)
    # json answers carry usage {type: duration, seconds}
    assert rec.endpoint == "translations" and rec.units == 2 and rec.unit == "second" and not rec.estimated


def test_moderation_is_free(app, sdk):
    r = sdk.moderations.create(model="mod", input=["I will attack the castle", "tea is nice"])
    assert r.results[0].flagged and r.results[0].categories.violence and not r.results[1].flagged
    [rec] = usage_records(app)
    assert rec.endpoint == "moderations" and rec.status == 200 and rec.cost_usd == 0
    assert (rec.units, rec.unit) == (1, "request")


def test_moderation_without_model_uses_the_default(app, sdk, mock):
    provider(app, "p-openai", mock + "/v1", {"moderation": ["omni-moderation-latest"]})
    r = sdk.moderations.create(input="hello")
    assert r.results[0].flagged is False
    assert usage_records(app)[0].requested_model == "omni-moderation-latest"


def test_rerank(app, sdk):
    r = requests.post(sdk.live.url + "/v1/rerank", headers={"Authorization": f"Bearer {sdk.api_key}"},
                      json={"model": "rr", "query": "capital of France",
                            "documents": ["Berlin is in Germany", "Paris is the capital of France", "tea"],
                            "top_n": 2, "return_documents": True}, timeout=10)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["index"] for x in results] == [1, 0] and results[0]["document"]["text"].startswith("Paris")
    [rec] = usage_records(app)
    assert rec.endpoint == "rerank" and (rec.units, rec.unit) == (1, "search_unit")
    assert rec.cost_usd == pytest.approx(0.002)


def test_budget_that_cannot_cover_the_images_refuses(app, sdk):
    poor = openai.OpenAI(base_url=sdk.live.url + "/v1", api_key=make_key(app, "poor", budget_usd=0.05),
                         max_retries=0)
    with pytest.raises(openai.RateLimitError) as e:
        poor.images.generate(model="img", prompt="two cats", n=2)       # 2 x $0.04
    assert e.value.status_code == 429 and e.value.body["code"] == "insufficient_quota"
    poor.images.generate(model="img", prompt="one cat")                 # $0.04 fits
    with pytest.raises(openai.RateLimitError):
        poor.images.generate(model="img", prompt="one more cat")        # $0.01 left
    refused, served, again = usage_records(app)
    assert refused.status == 429 and served.status == 200 and again.status == 429
    with app.app_context():
        [counter] = db.session.scalars(select(QuotaCounter)).all()
        assert counter.used_usd == pytest.approx(0.04) and counter.reserved_usd == pytest.approx(0)


def test_token_quota_does_not_count_media(app, sdk):
    key = make_key(app, "tokens", token_quota=5)
    client = openai.OpenAI(base_url=sdk.live.url + "/v1", api_key=key, max_retries=0)
    client.audio.speech.create(model="tts", voice="alloy", input="x" * 200)
    client.images.generate(model="img", prompt="a dog")
    with app.app_context():
        [counter] = db.session.scalars(select(QuotaCounter)).all()
        assert counter.used_tokens == 0 and counter.reserved_tokens == 0


def test_mode_mismatch_and_unknown_model(app, sdk):
    with pytest.raises(openai.BadRequestError) as e:
        sdk.images.generate(model="chat", prompt="a cat")
    assert e.value.body["type"] == "invalid_request_error" and e.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model="img", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.NotFoundError) as e:
        sdk.audio.speech.create(model="nope", voice="alloy", input="hi")
    assert e.value.body["code"] == "model_not_found"
    assert [r.status for r in usage_records(app)] == [400, 400, 404]


def test_bad_requests_are_refused_before_upstream(app, sdk, mock):
    with pytest.raises(openai.BadRequestError) as e:
        sdk.images.generate(model="img", prompt="x", n=11)
    assert e.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as e:
        sdk.audio.speech.create(model="tts", voice="alloy", input="hi", speed=9)
    assert e.value.body["param"] == "speed"
    r = requests.post(sdk.live.url + "/v1/audio/transcriptions", json={"model": "whisper"},
                      headers={"Authorization": f"Bearer {sdk.api_key}"}, timeout=10)
    assert r.status_code == 415 and r.json()["error"]["type"] == "invalid_request_error"
    r = requests.post(sdk.live.url + "/v1/audio/transcriptions", data={"model": "whisper"},
                      files={"other": ("a.wav", b"x")}, headers={"Authorization": f"Bearer {sdk.api_key}"},
                      timeout=10)
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"
    assert requests.get(mock + "/_mock/stats", timeout=5).json()["total"] == 0


def test_audio_upload_cap(app, sdk):
    app.config["AUDIO_MAX_REQUEST_BYTES"] = app.config["MAX_REQUEST_BYTES"] = 10_000
    with pytest.raises(openai.APIStatusError) as e:
        sdk.audio.transcriptions.create(model="whisper", file=("long.wav", wav(2.0)))
    assert e.value.status_code == 413
    assert usage_records(app)[0].status == 413


@pytest.mark.parametrize("call", ["image", "speech", "transcription"])
def test_upstream_fault_fails_over(app, live, mock, call):
    provider(app, "broken", mock + "/v1", {"image": ["img=fail-500"], "audio": ["tts=fail-503", "whisper=fail-500"]})
    provider(app, "good", mock + "/v1", MEDIA)
    with app.app_context():     # the broken one first, always
        for d in catalog_admin.provider_named("good").deployments:
            catalog_admin.save_deployment(d.model, "good", d.upstream_model, weight=0)
    client = openai.OpenAI(base_url=live.url + "/v1", api_key=make_key(app), max_retries=0)
    if call == "image":
        client.images.generate(model="img", prompt="a cat")
    elif call == "speech":
        assert client.audio.speech.create(model="tts", voice="alloy", input="hi").content.startswith(b"ID3")
    else:
        client.audio.transcriptions.create(model="whisper", file=("a.wav", wav(0.5)))
    [rec] = usage_records(app)
    assert rec.status == 200 and rec.provider == "good" and rec.units
    assert [a["status"] for a in rec.attempts][-1] == 200 and rec.attempts[0]["provider"] == "broken"


def test_deployment_prices_override_the_table(app, sdk):
    with app.app_context():
        catalog_admin.save_deployment("img", "p-openai", "dall-e-3", unit_price=0.5, price_unit="image")
    sdk.images.generate(model="img", prompt="a cat", n=3)
    assert usage_records(app)[0].cost_usd == pytest.approx(1.5)


def test_media_modes_refused_for_kinds_without_such_api(app):
    with app.app_context():
        with pytest.raises(InvalidRequest, match="anthropic providers have no image API"):
            catalog_admin.save_provider("claude", "anthropic", api_key="sk-ant-123456789",
                                        models=["c"], media_models={"image": ["x"]})
        db.session.rollback()
        catalog_admin.save_provider("claude", "anthropic", api_key="sk-ant-123456789", models=["c"])
        with pytest.raises(InvalidRequest, match="gemini|anthropic"):
            catalog_admin.save_deployment("speak", "claude", mode="audio")
        db.session.rollback()
        with pytest.raises(InvalidRequest, match="price_unit"):
            catalog_admin.save_deployment("c", "claude", unit_price=1.0, price_unit="banana")


def test_cli_adds_media_deployments(app, mock):
    run = app.test_cli_runner().invoke
    out = run(args=["providers", "add", "--name", "oa", "--kind", "openai", "--base-url", mock + "/v1",
                    "--api-key", UPSTREAM_KEY, "--image-models", "img", "--audio-models", "whisper-1,tts-1",
                    "--rerank-models", "rr", "--moderation-models", "mod"])
    assert out.exit_code == 0, out.output
    out = run(args=["deployments", "add", "rr", "oa", "--mode", "rerank", "--unit-price", "0.001",
                    "--price-unit", "search_unit"])
    assert out.exit_code == 0, out.output
    listed = run(args=["deployments", "list"]).output
    assert "0.001/search_unit" in listed and "rerank" in listed
    with app.app_context():
        modes = {d.model: d.mode for d in catalog_admin.provider_named("oa").deployments}
    assert modes == {"img": "image", "whisper-1": "audio", "tts-1": "audio", "rr": "rerank", "mod": "moderation"}
    out = run(args=["providers", "add", "--name", "cl", "--kind", "anthropic", "--api-key", "sk-ant-123456789",
                    "--image-models", "x"])
    assert out.exit_code != 0 and "no image API" in out.output


def test_console_lists_media_models_and_the_playground_chat_only(app, mock):
    make_user(app, "admin@example.com", "admin")
    provider(app, "p-openai", mock + "/v1", MEDIA)
    c = Console(app, "admin@example.com")
    page = c.get("/models")
    assert page.status_code == 200 and "img" in page.text and "whisper" in page.text
    assert c.get("/models/tts").status_code == 200
    playground = c.get("/playground").text
    assert ">chat</option>" in playground and ">img</option>" not in playground and ">tts</option>" not in playground


def test_gateway_yaml_declares_media_deployments(app, mock):
    from gateway.services.admin import declarative
    provider(app, "oa", mock + "/v1", {})
    doc = {"models": {"img": {"deployments": [
        {"provider": "oa", "upstream": "dall-e-3", "mode": "image", "unit_price": 0.1, "price_unit": "image"}]}}}
    with app.app_context():
        declarative.apply(doc, out=lambda *a: None)
        [d] = [d for d in catalog_admin.provider_named("oa").deployments if d.model == "img"]
        assert (d.mode, d.unit_price, d.price_unit) == ("image", 0.1, "image")
        bad = {"models": {"img": {"deployments": [{"provider": "oa", "mode": "video"}]}}}
        with pytest.raises(declarative.ConfigError, match="mode must be one of"):
            declarative.apply(bad, out=lambda *a: None)


def test_speech_cut_mid_body_breaks_the_transfer_and_is_recorded(app, live, mock):
    provider(app, "p-openai", mock + "/v1", {"audio": ["tts=tts-1+cut=1"], "image": ["img=fail-500"]})
    key = make_key(app, "budget", budget_usd=10)
    r = requests.post(live.url + "/v1/audio/speech", headers={"Authorization": f"Bearer {key}"},
                      json={"model": "tts", "voice": "alloy", "input": "x" * 300}, stream=True, timeout=10)
    assert r.status_code == 200 and r.headers["content-type"] == "audio/mpeg"
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        b"".join(r.iter_content(None))
    client = openai.OpenAI(base_url=live.url + "/v1", api_key=key, max_retries=0)
    with pytest.raises(openai.InternalServerError):
        client.images.generate(model="img", prompt="a cat")
    cut, failed = usage_records(app)
    assert cut.status == 502 and cut.error_type and cut.units == 300     # the provider bills the input
    assert failed.status == 502 and failed.cost_usd == 0 and failed.units is None
    with app.app_context():
        [counter] = db.session.scalars(select(QuotaCounter)).all()
        assert counter.used_usd == pytest.approx(cut.cost_usd) and counter.reserved_usd == pytest.approx(0)


@pytest.mark.parametrize("kind", ["mock", "azure"])
def test_other_openai_format_kinds(app, live, mock, kind):
    with app.app_context():
        catalog_admin.save_provider(f"p-{kind}", kind, base_url=None if kind == "mock" else mock,
                                    api_key=UPSTREAM_KEY, options={"api_version": "2024-10-21"} if kind == "azure" else None,
                                    media_models={"audio": ["whisper=whisper-1"], "rerank": ["rr=rr-1"]})
    client = openai.OpenAI(base_url=live.url + "/v1", api_key=make_key(app), max_retries=0)
    r = client.audio.transcriptions.create(model="whisper", file=("a.wav", wav(0.25), "audio/wav"),
                                           response_format="verbose_json")
    assert r.duration == 0.25
    r = requests.post(live.url + "/v1/rerank", headers={"Authorization": f"Bearer {client.api_key}"},
                      json={"model": "rr", "query": "a", "documents": ["a", "b"]}, timeout=10)
    assert r.status_code == 200 and r.json()["results"][0]["index"] == 0
    assert [(x.units, x.unit) for x in usage_records(app)] == [(0.25, "second"), (1, "search_unit")]


def test_console_log_and_export_show_units(app, sdk):
    make_user(app, "admin@example.com", "admin")
    sdk.images.generate(model="img", prompt="a cat", n=3)
    [rec] = usage_records(app)
    c = Console(app, "admin@example.com")
    assert "3 image" in c.get("/logs").text
    assert "3 images" in c.get(f"/logs/{rec.id}", headers={"HX-Request": "true"}).text
    header, line = c.get("/export.csv").text.splitlines()[:2]
    assert header.endswith("Units,Unit") and line.endswith("3.0,image")


def test_speech_client_that_leaves_is_recorded_and_billed(app, live, mock):
    provider(app, "p-openai", mock + "/v1", {"audio": ["tts=tts-1+chunk_delay=100"]})
    key = make_key(app)
    text = "y" * 2000        # 40 frames, one every 100 ms
    r = requests.post(live.url + "/v1/audio/speech", headers={"Authorization": f"Bearer {key}"},
                      json={"model": "tts", "voice": "alloy", "input": text}, stream=True, timeout=10)
    assert r.status_code == 200 and next(r.iter_content(64)).startswith(b"ID3")
    r.close()
    [rec] = records_when_written(app, 1)
    assert rec.status == 499 and rec.error_type == "client_disconnected" and rec.units == len(text)


def test_console_provider_form_adds_media_models(app, mock):
    make_user(app, "admin@example.com", "admin")
    c = Console(app, "admin@example.com")
    assert 'name="audio_models"' in c.get("/providers/new").text
    r = c.post("/providers", {"name": "oa", "kind": "openai", "base_url": mock + "/v1", "api_key": UPSTREAM_KEY,
                              "models": "chat", "image_models": "dall-e-3", "audio_models": "whisper-1, tts-1"})
    assert r.status_code == 303, r.text[:300]
    with app.app_context():
        modes = {d.model: d.mode for d in catalog_admin.provider_named("oa").deployments}
    assert modes == {"chat": "chat", "dall-e-3": "image", "whisper-1": "audio", "tts-1": "audio"}
    r = c.post("/providers", {"name": "cl", "kind": "anthropic", "api_key": "sk-ant-123456789",
                              "rerank_models": "rr"})
    assert r.status_code == 422 and "anthropic providers have no rerank API" in r.text
