"""Shared fixtures: the app on SQLite or Postgres, a live HTTP gateway, the mock upstream."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile

import pytest
import requests

from gateway.extensions import db
from gateway.services.accounting.usage import recorder
from tests.browser import browser_page, console_server  # noqa: F401 (the browser tests' fixtures)
from tests.helpers import ROOT, LiveServer, make_app, postgres_database

# Gateways the tests start as subprocesses keep their secrets and usage spool here, never in
# the checkout's instance/ (a spooled test record would be replayed into a real database).
os.environ["GATEWAY_INSTANCE_PATH"] = tempfile.mkdtemp(prefix="gw-test-instance-")


@pytest.fixture(scope="session")
def mock_upstream():
    """The project's fake provider as a real server on 127.0.0.1 (a subprocess), its base URL."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.Popen([sys.executable, "-m", "gateway.mock_upstream", "--port", "0"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        prefix = "mock-upstream listening on "
        assert line.startswith(prefix), f"unexpected first line {line!r}"
        yield line[len(prefix):]
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()


@pytest.fixture
def mock(mock_upstream):
    """The mock upstream's base URL, with its faults and request log cleared."""
    requests.post(mock_upstream + "/_mock/reset", timeout=5)
    yield mock_upstream
    requests.post(mock_upstream + "/_mock/reset", timeout=5)


@pytest.fixture(scope="session")
def postgres_db():
    """A database of our own on the Postgres server, one per xdist worker."""
    yield from postgres_database()


@pytest.fixture
def empty_postgres():
    """A new, empty Postgres database for one test (migrations start from nothing)."""
    yield from postgres_database()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def app(request, tmp_path):
    """The app on SQLite, and again on Postgres."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/test.db"
    else:
        url = request.getfixturevalue("postgres_db")
    app = make_app(url, instance_path=str(tmp_path / "instance"))
    yield app
    with app.app_context():
        recorder(app).drain()
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def sqlite_app(tmp_path):
    """SQLite only, for tests whose subject is not the database."""
    app = make_app(f"sqlite:///{tmp_path}/test.db", instance_path=str(tmp_path / "instance"))
    yield app
    with app.app_context():
        recorder(app).drain()
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def live(app):
    """The gateway serving over a real socket, for the official SDKs."""
    server = LiveServer(app)
    yield server
    server.stop()


class Hostile:
    """What one test tried: each case's expected and actual status, and records expected/found."""

    def __init__(self):
        self.cases: list[tuple[str, int, int]] = []
        self.records = [0, 0]       # expected, found

    def case(self, name: str, expected: int, got: int) -> bool:
        """Register a hostile input or fault and the status it got; True when it was the expected one."""
        self.cases.append((str(name), int(expected), int(got)))
        return expected == got

    def kept(self, expected: int, found: int) -> None:
        """Register how many usage records the cases should have left, and how many there are."""
        self.records[0] += int(expected)
        self.records[1] += int(found)


_HOSTILE = pytest.StashKey[dict]()


def _hostile_totals(config) -> dict:
    return config.stash.setdefault(_HOSTILE, {"cases": 0, "met": 0, "expected": 0, "lost": 0, "missed": []})


@pytest.fixture
def hostile(request):
    """Register hostile-input and fault cases for the summary at the end of the run.

        def test_bad_json(client, key, hostile):
            r = post(...)
            assert hostile.case("malformed JSON", 400, r.status_code)
            hostile.kept(1, len(usage_records(app)))      # records expected, records found

    `make test` then prints "hostile inputs and faults: N cases, N expected statuses met, 0 usage
    records lost", summed over xdist workers (each sends its totals in workeroutput)."""
    h = Hostile()
    yield h
    totals = _hostile_totals(request.config)
    totals["cases"] += len(h.cases)
    totals["met"] += sum(e == g for _, e, g in h.cases)
    totals["missed"] += [f"{request.node.nodeid} {n}: expected {e}, got {g}" for n, e, g in h.cases if e != g]
    totals["expected"] += h.records[0]
    totals["lost"] += max(0, h.records[0] - h.records[1])


def pytest_sessionfinish(session):
    if hasattr(session.config, "workeroutput"):      # an xdist worker: hand the totals over
        session.config.workeroutput["hostile"] = _hostile_totals(session.config)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """xdist: add a finished worker's totals to the controller's."""
    theirs = getattr(node, "workeroutput", {}).get("hostile")
    if theirs:
        ours = _hostile_totals(node.config)
        for name in ("cases", "met", "expected", "lost", "missed"):
            ours[name] += theirs[name]


def pytest_terminal_summary(terminalreporter, config):
    totals = _hostile_totals(config)
    if hasattr(config, "workeroutput") or not totals["cases"]:
        return
    terminalreporter.write_sep("-", "hostile inputs and faults")
    terminalreporter.write_line(f"{totals['cases']} cases tried, {totals['met']} expected statuses met, "
                                f"{totals['lost']} usage records lost (of {totals['expected']} expected)")
    for line in totals["missed"][:20]:
        terminalreporter.write_line(f"  missed: {line}")
