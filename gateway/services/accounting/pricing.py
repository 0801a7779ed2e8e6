"""Cost of a request from the per-model price table: USD per 1K tokens, or per unit for media
(images, seconds of audio, characters of speech, rerank search units)."""
from __future__ import annotations

import time

from flask import current_app
from sqlalchemy import select

from gateway.database import bounded_session
from gateway.extensions import db
from gateway.models import ModelPrice
from gateway.providers.base import Usage

# List prices at the time of writing; the admin edits the table, this only seeds it.
DEFAULT_PRICES: dict[str, tuple[float, float, float | None]] = {
    "gpt-4o": (0.0025, 0.01, 0.00125),
    "gpt-4o-mini": (0.00015, 0.0006, 0.000075),
    "gpt-4.1": (0.002, 0.008, 0.0005),
    "gpt-4.1-mini": (0.0004, 0.0016, 0.0001),
    "gpt-4.1-nano": (0.0001, 0.0004, 0.000025),
    "o3-mini": (0.0011, 0.0044, 0.00055),
    "text-embedding-3-small": (0.00002, 0.0, None),
    "text-embedding-3-large": (0.00013, 0.0, None),
    "claude-3-5-haiku": (0.0008, 0.004, 0.00008),
    "claude-3-7-sonnet": (0.003, 0.015, 0.0003),
    "claude-sonnet-4": (0.003, 0.015, 0.0003),
    "claude-opus-4": (0.015, 0.075, 0.0015),
    "gemini-2.0-flash": (0.0001, 0.0004, 0.000025),
    "gemini-2.5-flash": (0.0003, 0.0025, 0.000075),
    "gemini-2.5-pro": (0.00125, 0.01, 0.00031),
    "text-embedding-004": (0.0, 0.0, None),
    "deepseek-chat": (0.00027, 0.0011, 0.00007),
    "deepseek-reasoner": (0.00055, 0.00219, 0.00014),
    "qwen-plus": (0.0004, 0.0012, None),
    "qwen-turbo": (0.00005, 0.0002, None),
    "demo-chat": (0.0005, 0.0015, None),     # the demo mock provider, so costs show up
    "demo-embed": (0.00002, 0.0, None),
}

# price_unit -> (the unit a usage record counts, how many of those one price_unit is)
PRICE_UNITS: dict[str, tuple[str, int]] = {
    "image": ("image", 1), "second": ("second", 1), "minute": ("second", 60),
    "1k_chars": ("character", 1000), "search_unit": ("search_unit", 1), "request": ("request", 1)}
# Media list prices (USD per price_unit); moderation is free.
DEFAULT_UNIT_PRICES: dict[str, tuple[float, str]] = {
    "dall-e-2": (0.02, "image"), "dall-e-3": (0.04, "image"), "gpt-image-1": (0.042, "image"),
    "whisper-1": (0.006, "minute"), "tts-1": (0.015, "1k_chars"), "tts-1-hd": (0.03, "1k_chars"),
    "omni-moderation": (0.0, "request"), "text-moderation": (0.0, "request"),
    "rerank-english-v3.0": (0.002, "search_unit"), "rerank-multilingual-v3.0": (0.002, "search_unit"),
}


def seed_prices() -> None:
    """Insert the default price of every model not yet in the table."""
    have = set(db.session.scalars(select(ModelPrice.model)))
    for model, (inp, out, cached) in DEFAULT_PRICES.items():
        if model not in have:
            db.session.add(ModelPrice(model=model, input_per_1k=inp, output_per_1k=out,
                                      cached_input_per_1k=cached))
    for model, (price, unit) in DEFAULT_UNIT_PRICES.items():
        if model not in have:
            db.session.add(ModelPrice(model=model, input_per_1k=0.0, output_per_1k=0.0,
                                      unit_price=price, price_unit=unit))
    db.session.commit()


class PriceBook:
    """Cached copy of the price table; longest-prefix match covers dated model versions."""

    def __init__(self, ttl: float):
        self.ttl = ttl
        self.prices: dict[str, tuple[float, float, float | None]] = {}
        self.unit_prices: dict[str, tuple[float, str]] = {}     # model -> (USD, price_unit)
        self.matches: dict[str, tuple | None] = {}      # model -> its price, found once per reload
        self.unit_matches: dict[str, tuple | None] = {}
        self.loaded_at = float("-inf")

    def lookup(self, model: str) -> tuple[float, float, float | None] | None:
        if time.monotonic() - self.loaded_at >= self.ttl:
            try:
                with bounded_session():
                    rows = db.session.scalars(select(ModelPrice)).all()
                    self.prices = {p.model: (p.input_per_1k, p.output_per_1k, p.cached_input_per_1k)
                                   for p in rows}
                    self.unit_prices = {p.model: (p.unit_price, p.price_unit) for p in rows
                                        if p.unit_price is not None and p.price_unit in PRICE_UNITS}
            except Exception:
                db.session.rollback()
                current_app.logger.warning("price table reload failed", exc_info=True)
            finally:
                db.session.remove()
            self.matches, self.unit_matches = {}, {}
            self.loaded_at = time.monotonic()
        if model not in self.matches:
            self.matches[model] = self._match(model, self.prices)
        return self.matches[model]

    def unit_lookup(self, model: str) -> tuple[float, str] | None:
        """(USD, price_unit) of a media model, or None when the table has no unit price."""
        self.lookup(model)      # reloads when due
        if model not in self.unit_matches:
            self.unit_matches[model] = self._match(model, self.unit_prices)
        return self.unit_matches[model]

    def invalidate(self) -> None:
        """Reread the table on the next lookup."""
        self.loaded_at = float("-inf")

    @staticmethod
    def _match(model: str, prices: dict) -> tuple | None:
        if model in prices:
            return prices[model]
        name = model.rsplit("/", 1)[-1]     # "models/gemini-2.0-flash", "org/model"
        best = max((m for m in prices if name.startswith(m)), key=len, default=None)
        return prices[best] if best else None


def cost_of(price: tuple[float, float, float | None] | None, usage: Usage) -> float:
    """USD for `usage` at `price` (from PriceBook.lookup, taken while in app context)."""
    if price is None:
        return 0.0
    inp, out, cached = price
    cached_tokens = min(usage.cached_tokens, usage.prompt_tokens) if cached is not None else 0
    return ((usage.prompt_tokens - cached_tokens) * inp + cached_tokens * (cached or 0)
            + usage.completion_tokens * out) / 1000.0


def unit_cost(price: tuple[float, str] | None, units: float, unit: str) -> float:
    """USD for `units` of `unit` at `price` (USD, price_unit); 0 when unpriced or priced in a
    unit that does not measure this request (a per-image price on a transcription)."""
    if price is None or not units:
        return 0.0
    usd, price_unit = price
    counted, per = PRICE_UNITS.get(price_unit, ("", 1))
    return units / per * usd if counted == unit else 0.0


def price_book() -> PriceBook:
    """This process's price table (built by services.init_app)."""
    return current_app.extensions["price_book"]
