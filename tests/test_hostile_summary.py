"""The `hostile` fixture's summary at the end of a run: cases, expected statuses, records lost,
added up across xdist workers."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT

INNER = '''
def test_met(hostile):
    assert hostile.case("malformed JSON", 400, 400)
    hostile.kept(2, 2)

def test_missed(hostile):
    hostile.case("unknown model", 404, 500)
    hostile.kept(1, 0)

def test_more(hostile):
    hostile.case("revoked key", 401, 401)
'''


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "xdist"])
def test_summary_adds_up_cases_and_lost_records(tmp_path, workers):
    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import hostile, pytest_sessionfinish, pytest_testnodedown, pytest_terminal_summary\n")
    (tmp_path / "test_inner.py").write_text(INNER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    env.pop("PYTEST_XDIST_WORKER", None)
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *workers, str(tmp_path)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert "3 passed" in r.stdout, r.stdout + r.stderr
    assert "3 cases tried, 2 expected statuses met, 1 usage records lost (of 3 expected)" in r.stdout, r.stdout
    assert "missed: test_inner.py::test_missed unknown model: expected 404, got 500" in r.stdout
