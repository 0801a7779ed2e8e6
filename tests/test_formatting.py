"""Money is written as people write it, never in scientific notation."""
import pytest

from gateway.formatting import change, money


@pytest.mark.parametrize("usd, text", [
    (None, "—"), (0, "$0.00"), (1234.5, "$1,234.50"), (0.02, "$0.02"), (7.5e-05, "$0.000075"),
    (2e-05, "$0.00002"), (0.00301, "$0.003"), (0.0099, "$0.0099"), (-0.5, "-$0.50"), (1e-9, "$0.000000001"),
    (-2.710505431213761e-19, "$0.00"), (3e-16, "$0.00"),
])
def test_money(usd, text):
    assert money(usd) == text


@pytest.mark.parametrize("pct, text", [(None, ""), (12.4, "+12%"), (-2.2, "-2%"), (-1e-15, "0%"), (0.3, "0%"), (0, "0%")])
def test_change(pct, text):
    assert change(pct) == text
