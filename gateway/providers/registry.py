"""Provider kinds: which adapter speaks each kind's wire format, and the kind's defaults.

One entry per kind holds all the gateway knows about it, so services ask here instead of
keeping their own lists of URLs and special cases."""
from __future__ import annotations

from dataclasses import dataclass, field
from types import ModuleType

from gateway.providers import anthropic_messages, anthropic_native, gemini, openai_chat


@dataclass(frozen=True, slots=True)
class ProviderKind:
    """Everything about one provider kind: its adapter and the defaults a provider gets."""
    adapter: ModuleType
    default_base_url: str | None = None
    default_options: dict = field(default_factory=dict)    # filled in where unset or empty
    needs_key: bool = True
    fixed_base_url: bool = False    # always default_base_url, whatever was entered
    native: ModuleType | None = None    # passes an inbound dialect through as-is (its DIALECTS)


KINDS: dict[str, ProviderKind] = {     # in the order the console lists them
    "openai": ProviderKind(openai_chat, "https://api.openai.com/v1"),
    # Same format; the api_version option switches URL and auth. No default host: each
    # Azure resource has its own.
    "azure": ProviderKind(openai_chat, default_options={"api_version": "2024-10-21"}),
    "anthropic": ProviderKind(anthropic_messages, "https://api.anthropic.com/v1", native=anthropic_native),
    "gemini": ProviderKind(gemini, "https://generativelanguage.googleapis.com/v1beta"),
    # Answered in-process (create_app gives the transport gateway.mock_upstream for mock://).
    "mock": ProviderKind(openai_chat, "mock://local/v1", needs_key=False, fixed_base_url=True),
}
ADAPTERS: dict[str, ModuleType] = {name: kind.adapter for name, kind in KINDS.items()}
NATIVE: dict[str, ModuleType] = {name: kind.native for name, kind in KINDS.items() if kind.native}
DEFAULT_BASE_URLS: dict[str, str] = {name: kind.default_base_url for name, kind in KINDS.items()
                                     if kind.default_base_url}


def resolve_endpoint(kind: str, base_url: str | None,
                     options: dict | None) -> tuple[str, dict | None]:
    """The base URL and options a provider of `kind` really uses, defaults filled in.

    `options` comes back as given (None too, meaning "leave stored options alone") unless a
    default had to be added, then as a new dict. Raises KeyError for an unknown kind and
    ValueError when the kind has no default URL and none was given."""
    spec = KINDS[kind]
    if spec.fixed_base_url:
        url = spec.default_base_url
    else:
        url = (base_url or spec.default_base_url or "").strip()
    if not url:
        raise ValueError("this provider kind needs a base URL")
    missing = {k: v for k, v in spec.default_options.items() if not (options or {}).get(k)}
    if missing:
        options = {**(options or {}), **missing}
    return url, options
