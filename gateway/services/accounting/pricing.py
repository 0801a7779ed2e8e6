"""Cost of a request: USD per 1K tokens, or per unit for media (images, seconds of audio,
characters of speech, rerank search units). The admin's price table comes first, else the list
price genai-prices knows for the model. Both are resolved once per model and cached, so billing
on the hot path is a dict lookup."""
from __future__ import annotations

import time
from datetime import datetime, timezone

from flask import current_app
from sqlalchemy import select

from gateway.database import bounded_session
from gateway.extensions import db
from gateway.models import ModelPrice
from gateway.providers.base import Usage

# The demo provider's models, so costs show up in a fresh install; every other model is priced
# by genai-prices (pydantic's maintained price data) unless the admin sets a price.
DEFAULT_PRICES: dict[str, tuple[float, float, float | None]] = {
    "demo-chat": (0.0005, 0.0015, None),
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


Price = tuple[float, float, float | None]      # input, output, cached input: USD per 1K tokens


def warm() -> None:
    """Load genai-prices' data now, so a served worker's first request does not pay for it."""
    from genai_prices import data_snapshot

    data_snapshot.get_snapshot()


def listed_price(model: str) -> Price | None:
    """genai-prices' current list price of `model` (or of its name after a provider/ prefix)."""
    from genai_prices import data_snapshot     # lazy: its data takes ~0.5 s to import

    snapshot = data_snapshot.get_snapshot()
    for ref in dict.fromkeys((model.lower(), model.rsplit("/", 1)[-1].lower())):
        try:
            _, info = snapshot.find_provider_model(ref, None, None, None)
        except LookupError:     # no provider claims the name's pattern: ask each one
            info = next((found for provider in snapshot.providers
                         if (found := provider.find_model(ref, all_providers=snapshot.providers))), None)
        if info is None:
            continue
        p = info.get_prices(datetime.now(timezone.utc))
        inp, out, cached = (_per_1k(getattr(p, name, None)) for name in ("input_mtok", "output_mtok", "cache_read_mtok"))
        if inp is not None or out is not None:
            return inp or 0.0, out or 0.0, cached
    return None


def _per_1k(per_million) -> float | None:
    """USD per 1K tokens from genai-prices' per-million price (tiered: the base tier)."""
    if per_million is None:
        return None
    return float(getattr(per_million, "base", per_million) / 1000)


class PriceBook:
    """Cached copy of the price table; longest-prefix match covers dated model versions. A
    model the table does not price gets genai-prices' list price (looked up once per process)."""

    def __init__(self, ttl: float):
        self.ttl = ttl
        self.prices: dict[str, Price] = {}
        self.unit_prices: dict[str, tuple[float, str]] = {}     # model -> (USD, price_unit)
        self.matches: dict[str, tuple | None] = {}      # model -> its price, found once per reload
        self.unit_matches: dict[str, tuple | None] = {}
        self.listed: dict[str, Price | None] = {}       # model -> genai-prices' price, kept
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
            self.matches[model] = self._match(model)
        return self.matches[model]

    def unit_lookup(self, model: str) -> tuple[float, str] | None:
        """(USD, price_unit) of a media model, or None when the table has no unit price."""
        self.lookup(model)      # reloads when due
        if model not in self.unit_matches:
            self.unit_matches[model] = self._prefix_match(model, self.unit_prices)
        return self.unit_matches[model]

    def invalidate(self) -> None:
        """Reread the table on the next lookup."""
        self.loaded_at = float("-inf")

    def _match(self, model: str) -> Price | None:
        found = self._prefix_match(model, self.prices)
        if found is not None or not model:
            return found
        if model not in self.listed:
            try:
                self.listed[model] = listed_price(model)
            except Exception:       # a broken price package must not break billing
                current_app.logger.warning("genai-prices lookup failed for %s", model, exc_info=True)
                self.listed[model] = None
        return self.listed[model]

    @staticmethod
    def _prefix_match(model: str, prices: dict) -> tuple | None:
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
