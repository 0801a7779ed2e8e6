"""PII redaction: the detectors and their checksums, admin patterns (checked when saved, bounded
when run), and the modes: off, store (what the request log keeps) and upstream (what the
provider is sent too), set on keys, policies and as the console's default."""
from __future__ import annotations

import orjson
import pytest
import requests
from sqlalchemy import select

from gateway.extensions import db
from gateway.models import ApiKey, Policy, UsageRecord
from gateway.services.accounting import keys, prompt_log, redaction
from gateway.services.accounting.redaction import Redactor, check_pattern, effective_mode, parse_patterns
from gateway.services.accounting.usage import recorder
from gateway.services.admin import catalog_admin, declarative, settings
from tests.console_client import Console, make_user
from tests.helpers import add_provider, make_key

PII = "Mail jane.doe@example.com, card 4111 1111 1111 1111, call +1 415 555 2671."
REDACTED = "Mail [EMAIL], card [CARD], call [PHONE]."


@pytest.mark.parametrize("text,expected", [
    ("write to jane.doe+tag@mail.example.co.uk.", "write to [EMAIL]."),
    ("visa 4111 1111 1111 1111 exp 2025", "visa [CARD] exp 2025"),
    ("visa 4111-1111-1111-1111 and 4111111111111111", "visa [CARD] and [CARD]"),
    ("amex 3782 822463 10005", "amex [CARD]"),
    ("not luhn 4111 1111 1111 1112", "not luhn 4111 1111 1111 1112"),
    ("iban DE89 3704 0044 0532 0130 00 EUR", "iban [IBAN] EUR"),
    ("GB82WEST12345698765432 FR1420041010050500013M02606", "[IBAN] [IBAN]"),
    ("bad check GB82WEST12345698765433", "bad check GB82WEST12345698765433"),
    ("wrong length DE8937040044053201300", "wrong length DE8937040044053201300"),
    ("ssn 123-45-6789", "ssn [US_SSN]"),
    ("no ssn 000-12-3456 or 666-12-3456", "no ssn 000-12-3456 or 666-12-3456"),
    ("nino AB 12 34 56 C, QQ123456C", "nino [UK_NINO], QQ123456C"),
    ("(415) 555-2671 or 415-555-2671 or +44 20 7946 0958", "[PHONE] or [PHONE] or [PHONE]"),
    ("from 2024-01-31 to 2024-02-28 12:30, order 12345", "from 2024-01-31 to 2024-02-28 12:30, order 12345"),
    ("host 192.168.100.200 v1.2.3", "host 192.168.100.200 v1.2.3"),
])
def test_built_in_detectors(text, expected):
    assert Redactor().text(text) == expected


def test_checksums():
    assert redaction.luhn_ok("4111111111111111") and not redaction.luhn_ok("4111111111111112")
    assert redaction.iban_ok("NL91ABNA0417164300") and not redaction.iban_ok("NL91ABNA0417164301")
    assert not redaction.iban_ok("XX91ABNA0417164300")       # no such country


def test_admin_pattern_replaced_by_its_placeholder():
    r = Redactor((("employee_id", r"EMP-\d{6}"),))
    assert r.text("ask EMP-123456 or jane@example.com") == "ask [EMPLOYEE_ID] or [EMAIL]"


@pytest.mark.parametrize("pattern,problem", [
    (r"(a+)+b", "repeat inside a repeat"),
    (r"(?:x\w*)*y", "repeat inside a repeat"),
    (r"(a|ab)*c", "repeated alternation"),
    (r"(\w+)-\1", "back-reference"),
    (r"a*", "empty"),
    (r"\b", "empty"),
    (r"[unclosed", "Not a valid"),
    ("x" * 400, "characters"),
])
def test_risky_or_invalid_patterns_are_refused(pattern, problem):
    assert problem in (check_pattern("CODE", pattern) or "")


def test_pattern_names_are_checked():
    assert "letters" in check_pattern("no spaces", "x")
    assert "built in" in check_pattern("email", "x@y")
    assert check_pattern("ORDER", r"ORD-\d{8}") is None


def test_parse_patterns_names_the_bad_line():
    ok, problem = parse_patterns("# comment\nORDER = ORD-\\d{8}\n\nTICKET = T#\\d+")
    assert problem is None and ok == [{"name": "ORDER", "pattern": r"ORD-\d{8}"}, {"name": "TICKET", "pattern": r"T#\d+"}]
    _, problem = parse_patterns("ORDER = ORD-\\d{8}\nBAD = (a+)+")
    assert problem.startswith("Line 2:")
    _, problem = parse_patterns("ORDER = x\norder = y")
    assert "twice" in problem
    _, problem = parse_patterns("just a regex")
    assert "NAME = " in problem


def test_a_pattern_that_runs_too_long_withholds_the_text():
    # Never saved (check_pattern refuses it); built here to show the bound at run time.
    r = Redactor((("SLOW", r"(a+)+b"),))
    assert r.text("a" * 5000 + " jane@example.com") == redaction.WITHHELD


def test_mode_precedence():
    assert effective_mode(None, None, "store") == "store"            # the default
    assert effective_mode("off", None, "upstream") == "off"          # a key overrides the default
    assert effective_mode("off", "upstream", "off") == "upstream"    # key and policy: the stricter
    assert effective_mode("upstream", "store", None) == "upstream"
    assert effective_mode(None, None, None) == "off"


def test_body_redaction_keeps_structure_and_tool_arguments_valid():
    body = {"model": "m", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "I am jane@example.com"},
                                     {"type": "image_url", "image_url": {"url": "data:..."}}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function", "function": {
            "name": "lookup", "arguments": '{"email": "jane@example.com", "n": 2}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "phone 415-555-2671"}]}
    out = Redactor().body(body)
    assert out["messages"][1]["content"][0]["text"] == "I am [EMAIL]"
    assert out["messages"][1]["content"][1] == body["messages"][1]["content"][1]
    assert orjson.loads(out["messages"][2]["tool_calls"][0]["function"]["arguments"]) == {"email": "[EMAIL]", "n": 2}
    assert out["messages"][3]["content"] == "phone [PHONE]"
    assert "jane@example.com" in orjson.dumps(body).decode()        # the client's body is not changed
    emb = Redactor().body({"model": "e", "input": ["jane@example.com", [1, 2, 3]]})
    assert emb["input"] == ["[EMAIL]", [1, 2, 3]]


# Through the gateway: the mock upstream records what it was sent.

@pytest.fixture
def gw(app, mock):
    add_provider(app, "up", "openai", mock + "/v1", ["chat=echo", "flaky=echo+fail=500", "mirror=echo"],
                 embedding_models=["emb=echo"])
    with app.app_context():
        settings.put("log_prompts", True)
    app.mock = mock
    return app


def chat(app, secret, model="chat", text=PII, **extra):
    r = app.test_client().post("/v1/chat/completions", headers={"Authorization": f"Bearer {secret}"},
                               json={"model": model, "messages": [{"role": "user", "content": text}], **extra})
    r.get_data()
    return r


def sent(app) -> list[dict]:
    """The bodies the upstream received."""
    return [q["body"] for q in requests.get(app.mock + "/_mock/requests", timeout=5).json()["requests"]
            if q["path"].endswith(("/chat/completions", "/embeddings"))]


def stored(app) -> list[tuple]:
    with app.app_context():
        assert recorder(app).drain()
        rows = db.session.execute(select(UsageRecord.request_body, UsageRecord.response_text,
                                         UsageRecord.error_message).order_by(UsageRecord.id)).all()
    fernet = app.extensions["fernet"]
    return [(prompt_log.unseal(fernet, a), prompt_log.unseal(fernet, b), c) for a, b, c in rows]


def test_off_by_default_sends_and_stores_the_text(gw):
    assert chat(gw, make_key(gw)).status_code == 200
    assert sent(gw)[0]["messages"][0]["content"] == PII
    [(req, out, _)] = stored(gw)
    assert "jane.doe@example.com" in req and "jane.doe@example.com" in out


def test_store_mode_redacts_the_log_not_the_request(gw):
    r = chat(gw, make_key(gw, redact="store"))
    assert r.json["choices"][0]["message"]["content"] == "Echo: " + PII     # the client's answer is whole
    assert sent(gw)[0]["messages"][0]["content"] == PII
    chat(gw, make_key(gw, "s2", redact="store"), stream=True)
    for req, out, _ in stored(gw):
        assert orjson.loads(req) == [{"role": "user", "content": REDACTED}]
        assert out == "Echo: " + REDACTED


def test_upstream_mode_redacts_what_the_provider_sees(gw):
    secret = make_key(gw, redact="upstream")
    r = chat(gw, secret)
    assert r.json["choices"][0]["message"]["content"] == "Echo: " + REDACTED
    chat(gw, secret, stream=True)
    r = gw.test_client().post("/v1/embeddings", headers={"Authorization": f"Bearer {secret}"},
                              json={"model": "emb", "input": "jane.doe@example.com"})
    assert r.status_code == 200
    bodies = sent(gw)
    assert [b["messages"][0]["content"] for b in bodies[:2]] == [REDACTED, REDACTED]
    assert bodies[2]["input"] == "[EMAIL]"
    assert all("example.com" not in (req or "") + (out or "") for req, out, _ in stored(gw))


def test_upstream_mode_holds_for_every_attempt(gw):
    r = chat(gw, make_key(gw, redact="upstream"), model="flaky", models=["chat"])
    assert r.status_code == 200 and int(r.headers["x-gateway-attempts"]) >= 2
    assert all(b["messages"][0]["content"] == REDACTED for b in sent(gw))


def test_failed_requests_store_redacted_prompt_and_error(gw):
    r = chat(gw, make_key(gw, redact="store"), model="flaky")
    assert r.status_code == 502
    [(req, out, error)] = stored(gw)
    assert "[EMAIL]" in req and "example.com" not in req and out is None


def test_policy_mode_and_the_stricter_of_key_and_policy(gw):
    with gw.app_context():
        catalog_admin.save_policy("private", candidates=["chat"], redact="upstream")
    chat(gw, make_key(gw, "off-key", redact="off"), model="policy:private")
    chat(gw, make_key(gw, "plain"), model="chat")
    first, second = sent(gw)
    assert first["messages"][0]["content"] == REDACTED and second["messages"][0]["content"] == PII


def test_global_default_applies_to_keys_without_a_mode(gw):
    with gw.app_context():
        settings.put("redact_default", "upstream")
        settings.put("redact_patterns", [{"name": "CASE", "pattern": r"CASE-\d{4}"}])
    chat(gw, make_key(gw), text="CASE-1234 from jane@example.com")
    chat(gw, make_key(gw, "opted-out", redact="off"), text="CASE-1234")
    first, second = sent(gw)
    assert first["messages"][0]["content"] == "[CASE] from [EMAIL]"
    assert second["messages"][0]["content"] == "CASE-1234"


def test_settings_refuse_bad_values(app):
    with app.app_context():
        _, errors = settings.check({"redact_default": "sometimes", "redact_patterns": [{"name": "X", "pattern": "(a+)+"}]})
        assert set(errors) == {"redact_default", "redact_patterns"}
        clean, errors = settings.check({"redact_patterns": "CASE = CASE-\\d{4}"})
        assert not errors and clean["redact_patterns"] == [{"name": "CASE", "pattern": r"CASE-\d{4}"}]


def test_key_and_policy_modes_are_validated(app):
    with app.app_context():
        with pytest.raises(Exception, match="redact must be one of"):
            keys.create_key("k", redact="maybe")
        with pytest.raises(Exception, match="redact must be one of"):
            catalog_admin.save_policy("p", redact="maybe")


# Console, CLI and gateway.yaml

def test_console_settings_save_mode_and_patterns_with_errors_by_the_field(sqlite_app):
    make_user(sqlite_app, "admin@example.com", "admin")
    make_user(sqlite_app, "member@example.com", "member")
    admin = Console(sqlite_app, "admin@example.com")
    page = admin.get("/settings").text
    assert 'name="redact_default"' in page and 'name="redact_patterns"' in page
    r = admin.post("/settings", {"redact_default": "store", "redact_patterns": "CASE = CASE-\\d{4}\nBAD = (x+)+"})
    assert r.status_code == 422 and 'id="redact_patterns-error"' in r.text and "Line 2" in r.text
    assert "BAD = (x+)+" in r.text          # what was typed is shown again
    r = admin.post("/settings", {"redact_default": "store", "redact_patterns": "CASE = CASE-\\d{4}"})
    assert r.status_code == 200
    with sqlite_app.app_context():
        assert settings.get("redact_default") == "store"
        assert settings.get("redact_patterns") == [{"name": "CASE", "pattern": r"CASE-\d{4}"}]
    assert "CASE = CASE-\\d{4}" in admin.get("/settings").text
    member = Console(sqlite_app, "member@example.com")
    assert member.post("/settings", {"redact_default": "off"}).status_code == 403


def test_console_key_form_sets_the_mode_for_admins_only(sqlite_app):
    make_user(sqlite_app, "admin@example.com", "admin")
    member_id = make_user(sqlite_app, "member@example.com", "member")
    admin = Console(sqlite_app, "admin@example.com")
    assert 'name="redact"' in admin.get("/keys/new").text
    r = admin.post("/keys", {"name": "private", "redact": "upstream", "quota_period": "total"})
    assert r.status_code == 200
    r = admin.post("/keys", {"name": "bad", "redact": "sometimes", "quota_period": "total"})
    assert r.status_code == 422 and 'id="redact-error"' in r.text
    member = Console(sqlite_app, "member@example.com")
    assert 'name="redact"' not in member.get("/keys/new").text
    member.post("/keys", {"name": "mine", "redact": "off"})
    with sqlite_app.app_context():
        by_name = {k.name: k for k in db.session.scalars(select(ApiKey))}
        assert by_name["private"].redact == "upstream"
        assert by_name["mine"].user_id == member_id and by_name["mine"].redact is None     # ignored
        k = by_name["private"]
    r = admin.post(f"/keys/{k.id}", {"name": "private", "redact": "", "enabled": "on", "quota_period": "total"})
    assert r.status_code == 303
    with sqlite_app.app_context():
        assert db.session.get(ApiKey, k.id).redact is None


def test_cli_sets_key_and_policy_modes(sqlite_app):
    runner = sqlite_app.test_cli_runner()
    out = runner.invoke(args=["keys", "create", "--name", "ci", "--redact", "store"])
    assert out.exit_code == 0, out.output
    prefix = out.output.splitlines()[-1][:14]
    assert "redact=store" in runner.invoke(args=["keys", "list"]).output
    assert runner.invoke(args=["keys", "update", prefix, "--redact", "default"]).exit_code == 0
    assert runner.invoke(args=["policies", "set", "eu", "--regions", "eu", "--redact", "upstream"]).exit_code == 0
    assert runner.invoke(args=["keys", "create", "--name", "x", "--redact", "sometimes"]).exit_code != 0
    with sqlite_app.app_context():
        assert db.session.scalar(select(ApiKey.redact).where(ApiKey.name == "ci")) is None
        assert db.session.scalar(select(Policy.redact).where(Policy.name == "eu")) == "upstream"
    assert "redact=upstream" in runner.invoke(args=["policies", "list"]).output


def test_gateway_yaml_sets_a_policy_mode(sqlite_app):
    with sqlite_app.app_context():
        declarative.apply({"policies": {"eu": {"strategy": "latency", "redact": "store"}}}, out=lambda *_: None)
        assert db.session.scalar(select(Policy.redact).where(Policy.name == "eu")) == "store"
        with pytest.raises(declarative.ConfigError, match="redact"):
            declarative.apply({"policies": {"eu": {"redact": "always"}}}, out=lambda *_: None)


def test_a_stored_pattern_that_does_not_compile_is_skipped_not_fatal(gw):
    with gw.app_context():
        settings.put("redact_default", "upstream")
        settings.put("redact_patterns", [{"name": "BROKEN", "pattern": "[unclosed"}])   # past the checks
    r = chat(gw, make_key(gw))
    assert r.status_code == 200 and sent(gw)[0]["messages"][0]["content"] == REDACTED


def test_upstream_mode_holds_for_shadow_copies(gw):
    import time
    with gw.app_context():
        catalog_admin.save_policy("mirrored", candidates=["chat"], shadow={"model": "mirror", "percent": 100},
                                  redact="upstream")
    assert chat(gw, make_key(gw), model="policy:mirrored").status_code == 200
    deadline = time.monotonic() + 10
    while len(sent(gw)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    bodies = sent(gw)
    assert len(bodies) == 2 and all(b["messages"][0]["content"] == REDACTED for b in bodies)
