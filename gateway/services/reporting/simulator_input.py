"""The policy simulator's text inputs (prices, alias and policy pairs, weights), parsed for the
console form and `gateway simulate`; bad input raises InvalidRequest naming its field."""
from __future__ import annotations

from gateway.errors import InvalidRequest


def parse_prices(text: str) -> dict[str, tuple[float, float]]:
    """`model=input,output` per line or comma-free list (USD per 1K tokens)."""
    out = {}
    for line in _items(text):
        name, sep, value = line.partition("=")
        parts = value.split(",")
        if not sep or not name.strip() or len(parts) != 2:
            raise InvalidRequest(f"Write '{line}' as model=input,output (USD per 1K tokens).", param="prices")
        try:
            inp, out_ = float(parts[0]), float(parts[1])
        except ValueError:
            raise InvalidRequest(f"'{value}' are not two prices.", param="prices") from None
        if not (inp >= 0 and out_ >= 0) or inp == float("inf") or out_ == float("inf"):
            raise InvalidRequest(f"The price of '{name.strip()}' must be 0 or more.", param="prices")
        out[name.strip()] = (inp, out_)
    return out


def parse_pairs(text: str, param: str) -> dict[str, str]:
    """`name=target` per line (aliases)."""
    out = {}
    for line in _items(text):
        name, sep, target = (s.strip() for s in line.partition("="))
        if not sep or not name or not target:
            raise InvalidRequest(f"Write '{line}' as alias=target.", param=param)
        out[name] = target
    return out


def parse_weights(text: str) -> dict[str, int]:
    """`candidate=weight, ...`"""
    out = {}
    for item in (s.strip() for s in text.replace("\n", ",").split(",")):
        if not item:
            continue
        name, sep, value = (s.strip() for s in item.partition("="))
        if not sep or not value.isdigit():
            raise InvalidRequest(f"Write '{item}' as candidate=weight (a whole number).", param="weights")
        out[name] = int(value)
    return out


def _items(text: str) -> list[str]:
    return [line.strip() for line in (text or "").replace(";", "\n").splitlines() if line.strip()]
