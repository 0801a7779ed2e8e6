"""Real Node clients against a live gateway and the mock upstream: openai-node and the
Vercel AI SDK, installed from tests/node/package-lock.json (npm ci) once per session.

Skipped only when `node` is absent; a failing npm install fails the tests, loudly."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess

import pytest

from tests.helpers import ROOT, LiveServer, add_provider, make_key, usage_records

NODE_DIR = ROOT / "tests" / "node"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")


@pytest.fixture(scope="session")
def node_modules():
    """tests/node/node_modules as the lock file pins it; installed once (a lock keeps xdist
    workers from installing over each other)."""
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("node is installed but npm is not: cannot install the Node clients")
    stamp = NODE_DIR / "node_modules" / ".package-lock.json"
    with open(NODE_DIR / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock_file = NODE_DIR / "package-lock.json"
        if not stamp.exists() or stamp.stat().st_mtime < lock_file.stat().st_mtime:
            done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=NODE_DIR,
                                  capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                pytest.fail(f"npm ci failed in {NODE_DIR}:\n{done.stdout}\n{done.stderr}")
    return NODE_DIR / "node_modules"


@pytest.fixture
def gw(node_modules, sqlite_app, mock):
    """A live gateway with every kind that serves chat and embeddings, on the mock upstream."""
    app = sqlite_app
    add_provider(app, "oa", "openai", mock + "/v1", ["oa-chat=echo"],
                 embedding_models=["oa-embed=text-embedding-3-small"])
    add_provider(app, "gem", "gemini", mock + "/v1beta", ["gem-chat=gemini-2.0-flash"],
                 embedding_models=["gem-embed=text-embedding-004"])
    add_provider(app, "demo", "mock", None, ["demo-chat"], embedding_models=["demo-embed"])
    server = LiveServer(app)
    server.key = make_key(app)
    yield server
    server.stop()


def node(gw, script: str, model: str, *args: str) -> dict:
    """Run tests/node/<script> against the gateway; its one line of JSON output."""
    env = {**os.environ, "GATEWAY_URL": gw.url, "GATEWAY_KEY": gw.key, "MODEL": model}
    done = subprocess.run([NODE, script, *args], cwd=NODE_DIR, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, f"{script} {model} {args} failed:\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("model", ["oa-embed", "gem-embed", "demo-embed"])
def test_openai_node_default_base64_embeddings_equal_floats(gw, model):
    out = node(gw, "openai_embeddings.mjs", model)
    assert out["model"] == model and len(out["default"]) == 2
    for by_default, as_float in zip(out["default"], out["float"]):
        assert len(by_default) == len(as_float) > 0
        assert by_default == pytest.approx(as_float, rel=1e-6)     # float32 on the wire
    assert len(usage_records(gw.app)) == 2


@pytest.mark.parametrize("model", ["oa-chat", "gem-chat", "demo-chat"])
def test_openai_node_chat_whole_and_streamed(gw, model):
    out = node(gw, "openai_chat.mjs", model)
    assert out["model"] == model and out["content"]
    assert out["finish_reason"] == "stop"
    assert out["stream_text"] == out["content"] and out["stream_models"] == [model]
    assert out["stream_usage"]["total_tokens"] > 0
    assert [r.status for r in usage_records(gw.app)] == [200, 200]


@pytest.mark.parametrize("call", ["generate", "stream"])
def test_ai_sdk_chat_model(gw, call):
    out = node(gw, "ai_sdk.mjs", "oa-chat", "chat", call)
    assert out["text"] == "Echo: one two three" and out["finishReason"] == "stop"
    assert out["usage"]["totalTokens"] > 0



@pytest.mark.parametrize("call", ["generate", "stream"])
def test_ai_sdk_default_model_uses_responses(gw, call):
    out = node(gw, "ai_sdk.mjs", "oa-chat", "responses", call)
    assert out["text"] == "Echo: one two three" and out["finishReason"] == "stop"
    assert out["usage"]["totalTokens"] > 0
