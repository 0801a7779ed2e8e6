"""Provider kinds: which adapter speaks each kind's wire format, and the kind's defaults.

One entry per kind holds all the gateway knows about it, so services ask here instead of
keeping their own lists of URLs and special cases."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import ModuleType

from gateway.providers import anthropic_messages, bedrock_converse, gemini, openai_chat

# AWS region names, e.g. us-east-1, eu-central-2, us-gov-west-1: nothing that could change the host.
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")


@dataclass(frozen=True, slots=True)
class ProviderKind:
    """Everything about one provider kind: its adapter and the defaults a provider gets."""
    adapter: ModuleType
    default_base_url: str | None = None
    default_options: dict = field(default_factory=dict)    # filled in where unset or empty
    needs_key: bool = True
    fixed_base_url: bool = False    # always default_base_url, whatever was entered
    regional_url: str | None = None     # the default URL built from the region, "{region}" in it
    embeddings: bool = True         # the adapter can serve embedding deployments


KINDS: dict[str, ProviderKind] = {     # in the order the console lists them
    "openai": ProviderKind(openai_chat, "https://api.openai.com/v1"),
    # Same format; the api_version option switches URL and auth. No default host: each
    # Azure resource has its own.
    "azure": ProviderKind(openai_chat, default_options={"api_version": "2024-10-21"}),
    "anthropic": ProviderKind(anthropic_messages, "https://api.anthropic.com/v1"),
    "gemini": ProviderKind(gemini, "https://generativelanguage.googleapis.com/v1beta"),
    # Converse/ConverseStream, SigV4-signed; each region has its own host.
    "bedrock": ProviderKind(bedrock_converse, embeddings=False,
                            regional_url="https://bedrock-runtime.{region}.amazonaws.com"),
    # Answered in-process (create_app gives the transport gateway.mock_upstream for mock://).
    "mock": ProviderKind(openai_chat, "mock://local/v1", needs_key=False, fixed_base_url=True),
}
ADAPTERS: dict[str, ModuleType] = {name: kind.adapter for name, kind in KINDS.items()}
# What the console shows for an empty Base URL; regional kinds show their URL pattern.
DEFAULT_BASE_URLS: dict[str, str] = {name: kind.default_base_url or kind.regional_url
                                     for name, kind in KINDS.items()
                                     if kind.default_base_url or kind.regional_url}


def resolve_endpoint(kind: str, base_url: str | None,
                     options: dict | None, region: str = "") -> tuple[str, dict | None]:
    """The base URL and options a provider of `kind` really uses, defaults filled in.

    `options` comes back as given (None too, meaning "leave stored options alone") unless a
    default had to be added, then as a new dict. Raises KeyError for an unknown kind and
    ValueError when the kind has no default URL and none was given (for a regional kind: no
    valid region either)."""
    spec = KINDS[kind]
    if spec.fixed_base_url:
        url = spec.default_base_url
    else:
        url = (base_url or spec.default_base_url or "").strip()
    if not url and spec.regional_url:
        url = regional_url(kind, region)
    if not url:
        raise ValueError("this provider kind needs a base URL")
    missing = {k: v for k, v in spec.default_options.items() if not (options or {}).get(k)}
    if missing:
        options = {**(options or {}), **missing}
    return url, options


def regional_url(kind: str, region: str) -> str:
    """The kind's default URL in `region`; ValueError for a kind without one or a bad region."""
    spec = KINDS[kind]
    if not spec.regional_url:
        raise ValueError("this provider kind has no regional endpoints")
    region = (region or "").strip().lower()
    if not _REGION.fullmatch(region):
        raise ValueError("this provider kind needs an AWS region such as us-east-1 (or a base URL)")
    return spec.regional_url.format(region=region)


def deployment_base_url(kind: str, base_url: str, provider_region: str, region: str | None) -> str:
    """The URL a deployment with its own `region` calls: the regional default of that region when
    the provider uses the regional default of its own; an explicit base URL stays as it is."""
    spec = KINDS.get(kind)
    if not (spec and spec.regional_url and region and region != provider_region):
        return base_url
    try:
        if base_url.rstrip("/") != regional_url(kind, provider_region):
            return base_url
        return regional_url(kind, region)
    except ValueError:
        return base_url
