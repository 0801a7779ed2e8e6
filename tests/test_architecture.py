"""The layering rules, checked on the source with tools/modgraph.py (ast only, nothing imported)."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("modgraph", ROOT / "tools" / "modgraph.py")
modgraph = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(modgraph)


@pytest.fixture(scope="module")
def report():
    return modgraph.analyze(ROOT / "gateway")


@pytest.mark.parametrize("rule", [rule for rule, _, _ in modgraph.RULES])
def test_layering_rule_holds(report, rule):
    broken = [f"{v['module']}:{v['line']} imports {v['imports']}"
              for v in report["violations"] if v["rule"] == rule]
    assert not broken, f"{rule}:\n  " + "\n  ".join(broken)


def test_no_import_cycles_counting_lazy_imports(report):
    cycles = [", ".join(c["modules"]) for c in report["cycles"]["with_lazy"]]
    assert not cycles, "import cycles:\n  " + "\n  ".join(cycles)


def test_no_module_much_over_400_lines(report):
    # "About 400": the Gemini adapter is one wire format at 414 lines and stays whole.
    big = [f"{m['module']} {m['lines']}" for m in report["largest"] if m["lines"] > 420]
    assert not big, "modules over ~400 lines: " + ", ".join(big)
