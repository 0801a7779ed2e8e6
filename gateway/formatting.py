"""Money as people write it, for pages, messages and the CLI: $1,234.50, $0.02, $0.000075;
never 7.5e-05."""
from __future__ import annotations

from decimal import Decimal

NOISE = 5e-13    # far below any real charge (a token at $0.01 per 1M tokens is $1e-8)


def money(usd: float | None, none: str = "—") -> str:
    """Dollars with cents; amounts under a cent keep their first two significant digits.
    Float noise (a difference of two equal sums, -2.7e-19) is zero, not -$0.00000000000000000027."""
    if usd is None:
        return none
    if abs(usd) < NOISE:
        usd = 0
    sign, usd = ("-" if usd < 0 else ""), abs(usd)
    if usd >= 0.01 or usd == 0:
        return f"{sign}${usd:,.2f}"
    return sign + "$" + _significant(usd)


def _significant(usd: float) -> str:
    """0.0000754 -> 0.000075; 0.00301 -> 0.003: two significant digits, trailing zeros dropped."""
    text = f"{usd:.2g}"
    if "e" in text:
        mantissa, exp = text.split("e")
        places = -int(exp) + max(len(mantissa.replace(".", "")) - 1, 0)
        text = f"{usd:.{places}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def plain(value) -> str:
    """A number as a form field or a CSV cell holds it, exactly: 0.000075, never 7.5e-05; "" for None."""
    if value is None:
        return ""
    if isinstance(value, float):
        return format(Decimal(repr(value)), "f")
    return str(value)


def price(usd: float | None, none: str = "—") -> str:
    """A unit price (per 1M tokens, per image): like money, but the digits past the cents stay,
    up to six places: $0.075, $2.50, $0.015, $0.000075."""
    if usd is None:
        return none
    if usd == 0 or abs(usd) >= 0.01:
        text = f"{abs(usd):,.6f}".rstrip("0")
        return ("-" if usd < 0 else "") + "$" + (text if len(text.split(".")[1]) >= 2 else f"{abs(usd):,.2f}")
    return money(usd)


def change(pct: float | None, none: str = "") -> str:
    """A relative change as people write it: +12%, -2%; under half a percent either way is 0%, never -0%."""
    if pct is None:
        return none
    return "0%" if abs(pct) < 0.5 else f"{pct:+.0f}%"
