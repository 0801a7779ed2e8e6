"""A fake model provider speaking the OpenAI, Anthropic, Gemini and Bedrock wire formats.

Used three ways: as a real HTTP server on 127.0.0.1 by the tests and the benchmark
(`python -m gateway.mock_upstream --port 0` prints `mock-upstream listening on
http://127.0.0.1:PORT`), and in-process by the gateway's `mock` provider, which calls
the WSGI callable `app(environ, start_response)` directly. Importing starts nothing.

Routes:
    POST /v1/chat/completions, /v1/embeddings; GET /v1/models          (OpenAI)
    POST /openai/deployments/{deployment}/chat/completions|embeddings   (Azure OpenAI)
    POST /v1/messages, key in x-api-key or a bearer token               (Anthropic)
    POST /v1beta/models/{model}:generateContent|streamGenerateContent?alt=sse
         |embedContent|batchEmbedContents                               (Gemini)
    POST /model/{modelId}/converse|converse-stream, SigV4-signed for the test credentials
         in bedrock.py or with its test API key as a bearer token          (AWS Bedrock)
    /_mock/faults (POST queues, GET lists, DELETE clears), GET /_mock/requests,
    GET /_mock/stats, POST /_mock/reset                                 (control)

Answers are deterministic: "Echo: " + the text of the last user message, cut to
max_tokens words (then finish reason length / max_tokens / MAX_TOKENS). Prompt tokens
are the words of every message + 3 per message; completion tokens are reply words.
Streams send one chunk per word. With tools (and tool choice not "none") and a user
turn last, the answer is a call to the first (or the chosen) tool with arguments
{"query": <last user text>}; JSON mode answers {"echo": <last user text>}.

Fault and pacing directives, in three places (later ones win):
  1. the model name: `base[+directive]...`, e.g. `echo+latency=50+chunk_delay=10`,
     `echo+fail=429+retry_after=2`; `fail-NNN` (also as the whole model name, e.g.
     `fail-500`) is short for `fail=NNN`. An unknown directive after `+` is a 400.
  2. headers: `x-mock-latency-ms: 50`, `x-mock-chunk-delay-ms: 10`,
     `x-mock-fault: fail=429+retry_after=2` (directives joined by `+` or `,`).
  3. the control API: `POST /_mock/faults {"faults": ["fail=500", "reset"], "path": "embed"}`
     queues faults; each matching request (path contains `path`, if given) takes
     the oldest one.

Directives:
    latency=MS        delay the first byte
    chunk_delay=MS    sleep between content chunks of a stream
    fail=STATUS       answer STATUS with the vendor's error body ("mock failure STATUS")
    retry_after=S     add `retry-after: S` (use with fail=429)
    retry_after_ms=MS add `retry-after-ms: MS`, as OpenAI sends it
    hang              sleep an hour before answering, so client timeouts fire
    reset             close the connection abruptly (RST) without a response
    cut=N             stop after N content chunks by closing the connection abruptly,
                      no terminal event; a non-streaming body is cut in half
    malformed         send `data: {not json` after the first content chunk; a
                      non-streaming body is `{not json`
    big_event=N       after the first content chunk of a stream, one more event carrying
                      N characters of text (an SSE event of about N bytes)

In-process there is no socket: `reset` and `cut` raise ConnectionResetError from the
response iterator instead. For `reset`, start_response is never called.

Layout, mirroring gateway/providers/: openai.py, anthropic.py, gemini.py and bedrock.py each fake one
wire format; answers.py holds the answer they share, faults.py the directives, routes.py
maps paths to handlers, wsgi.py is the WSGI app with the control routes, server.py
serves it over sockets (`__main__.py` runs server.main).
"""
from gateway.mock_upstream.answers import (Answer, count_words, embedding, make_answer,
                                           prompt_tokens, reply_words, text_of)
from gateway.mock_upstream.faults import Faults, apply_directives, model_faults
from gateway.mock_upstream.routes import route
from gateway.mock_upstream.server import main, serve
from gateway.mock_upstream.wsgi import MockUpstream, app

__all__ = ["Answer", "Faults", "MockUpstream", "app", "apply_directives", "count_words",
           "embedding", "main", "make_answer", "model_faults", "prompt_tokens", "reply_words",
           "route", "serve", "text_of"]
