"""Keys and audit in a real browser: select keys, extend their expiry and set a quota in one
batch each, see the audit entry naming the prefixes, filter the audit and export it as CSV."""
from __future__ import annotations

import csv
import io
from datetime import timedelta
from pathlib import Path

from gateway.extensions import db
from gateway.models import ApiKey, utcnow
from gateway.services.accounting import keys, teams
from tests.browser import BROWSER, EVIL, expect, login, shot

pytestmark = BROWSER


def test_batch_extend_and_quota_then_the_audit_and_its_export(browser_page, console_server):
    page, app = browser_page, console_server.app
    soon = utcnow().replace(microsecond=0) + timedelta(days=5)
    with app.app_context():
        plan = teams.save_plan("starter", models=["demo-chat"], rpm=100)
        team = teams.save_team("red", budget_usd=50.0, plan_id=plan.id)
        made = [keys.create_key(name, expires_at=soon, team_id=team.id, plan_id=plan.id)[0]
                for name in ("alpha", "beta", EVIL)]
        keys.create_key("later", valid_from=utcnow() + timedelta(days=3))
        ids = {k.name: k.id for k in made}
        prefixes = {k.name: k.prefix for k in made}

    login(page)
    page.goto("/keys")
    assert "models: demo-chat (plan starter)" in page.inner_text("#key-rows")
    assert EVIL in page.inner_text("#key-rows")                 # shown as text, never run
    shot(page, "keys-01-list")

    # extend alpha and beta by 30 days
    for name in ("alpha", "beta"):
        page.check(f"input[name=ids][value='{ids[name]}']")
    page.fill("#key-batch input[name=days]", "30")
    page.click("#key-batch button[value=extend]")
    page.wait_for_selector(".flash")
    assert "Extend: 2 key(s) changed" in page.inner_text(".flash")
    with app.app_context():
        got = {k.name: k.expires_at for k in db.session.query(ApiKey).filter(ApiKey.id.in_(ids.values()))}
    assert got["alpha"] == got["beta"] == soon + timedelta(days=30) and got[EVIL] == soon

    # set a token quota on all three (select all)
    page.check("input[data-select-all=ids]")
    page.fill("#key-batch input[name=token_quota]", "5000")
    page.click("#key-batch button[value=quota]")
    page.wait_for_selector(".flash")
    assert "Quota: 4 key(s) changed" in page.inner_text(".flash")
    assert "5,000 tok" in page.inner_text("#key-rows")
    shot(page, "keys-02-after-batch")

    # the filters: not-yet-valid shows only "later"
    page.select_option("#key-filters select[name=state]", "not-yet-valid")
    expect(page.locator("#key-rows tbody tr")).to_have_count(1)
    assert "later" in page.inner_text("#key-rows") and "alpha" not in page.inner_text("#key-rows")

    # the detail shows the limits that apply, with their sources
    page.goto(f"/keys/{ids['alpha']}")
    limits = page.inner_text("#effective-limits")
    assert "demo-chat" in limits and "plan starter" in limits and "5,000 tokens in total" in limits
    assert "$50.00 a month, shared by the team" in limits
    shot(page, "keys-03-detail-effective-limits")
    page.goto(f"/keys/{ids['alpha']}/edit")
    assert page.is_visible("input[name=valid_from]")
    shot(page, "keys-04-form-valid-from")

    # the audit names the prefixes each batch hit, with its values
    page.goto("/audit")
    page.select_option("#audit-filters select[name=action]", "key")
    page.fill("#audit-filters input[name=target]", "keys")
    page.click("#audit-filters button[type=submit]")
    page.wait_for_url(lambda url: "target=keys" in url)
    rows = page.inner_text("#audit-rows")
    assert "key.batch_extend" in rows and "key.batch_quota" in rows and "[redacted]" not in rows
    assert prefixes["alpha"] in rows and prefixes["beta"] in rows and "days: 30" in rows and "token_quota: 5000" in rows
    shot(page, "audit-01-filtered")

    with page.expect_download() as download:
        page.click("#audit-export-csv")
    body = Path(download.value.path()).read_text(encoding="utf-8-sig")
    exported = list(csv.reader(io.StringIO(body)))
    assert exported[0][:4] == ["Time (UTC)", "Actor", "Source", "Action"]
    assert sorted(r[3] for r in exported[1:]) == ["key.batch_extend", "key.batch_quota"]
    extend = next(r for r in exported[1:] if r[3] == "key.batch_extend")
    assert prefixes["alpha"] in extend[5] and prefixes["beta"] in extend[5] and prefixes[EVIL] not in extend[5]
    with page.expect_download() as xlsx:
        page.click("#audit-export-xlsx")
    assert xlsx.value.suggested_filename.endswith(".xlsx")
    assert page.js_errors == []


FIELDS_OVERFLOWING = """() => [...document.querySelectorAll('.grid3 > label')].flatMap(label => {
    const box = label.getBoundingClientRect();
    return [...label.querySelectorAll('input, select')].filter(f => f.getBoundingClientRect().right > box.right + 1)
        .map(f => f.name);
})"""


def test_key_form_fields_stay_in_their_columns(browser_page, console_server):
    """The PII redaction select's longest option once pushed it over the next column's field."""
    page = browser_page
    login(page)
    page.goto("/keys/new")
    assert page.evaluate(FIELDS_OVERFLOWING) == []
    assert page.js_errors == []
