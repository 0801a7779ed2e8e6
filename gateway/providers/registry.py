"""Provider kinds: which adapter speaks each kind's wire format, and the kind's defaults.

One entry per kind holds all the gateway knows about it, so services ask here instead of
keeping their own lists of URLs and special cases. Vendor presets (DeepSeek, Bailian, Ark, ...)
are kinds too: `--kind deepseek` and `--kind openai --preset deepseek` resolve through the
same entry; the first stores kind `deepseek`, the second kind `openai` with the preset's options."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import ModuleType

from gateway.providers import (anthropic_messages, anthropic_native, bedrock_converse, gemini, openai_chat,
                               openai_media)

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
    label: str = ""                 # how the console names a preset
    models: tuple[str, ...] = ()    # the vendor's well-known model names, a hint for the forms
    preset_of: str | None = None    # the base kind whose wire format this vendor speaks
    regional_url: str | None = None     # the default URL built from the region, "{region}" in it
    embeddings: bool = True         # the adapter can serve embedding deployments
    media: ModuleType | None = None     # images, audio, moderations, rerank; None: the vendor has no such API
    native: ModuleType | None = None    # passes an inbound dialect through as-is (its DIALECTS)


def _preset(label: str, base_url: str | None, models: tuple[str, ...], *, needs_key: bool = True,
            **quirks: str) -> ProviderKind:
    """An OpenAI-compatible vendor: its URL, models and openai_chat quirk options (see there).
    Media paths are OpenAI's too; a vendor without one answers its own 404 at call time."""
    return ProviderKind(openai_chat, base_url, dict(quirks), needs_key=needs_key, label=label,
                        models=models, preset_of="openai", media=openai_media)


# Quirks (openai_chat reads them from the provider's options):
#   stream_usage="omit"       the vendor refuses `stream_options`; usage comes in its last chunk anyway
#   max_tokens_field="max_tokens"   the vendor refuses `max_completion_tokens`: sent as max_tokens
#   reasoning_field=NAME      the delta/message field carrying the model's thinking, counted for estimates
PRESETS: dict[str, ProviderKind] = {
    "bailian": _preset("Alibaba Bailian (DashScope, Beijing)", "https://dashscope.aliyuncs.com/compatible-mode/v1",
                       ("qwen-max", "qwen-plus", "qwen-turbo", "qwen3-max", "qwq-plus", "qwen-vl-plus"),
                       max_tokens_field="max_tokens", reasoning_field="reasoning_content"),
    "bailian-singapore": _preset("Alibaba Bailian (DashScope, Singapore)",
                                 "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
                                 ("qwen-max", "qwen-plus", "qwen-turbo", "qwen3-max", "qwq-plus"),
                                 max_tokens_field="max_tokens", reasoning_field="reasoning_content"),
    "byteplus": _preset("BytePlus ModelArk (ap-southeast)", "https://ark.ap-southeast.bytepluses.com/api/v3",
                        ("seed-2-0-pro-260328", "deepseek-v4-flash-260425"),
                        max_tokens_field="max_tokens", reasoning_field="reasoning_content"),
    "volcengine": _preset("Volcengine Ark (Doubao, Beijing)", "https://ark.cn-beijing.volces.com/api/v3",
                          ("doubao-seed-1-8-251228", "doubao-seed-1-6-250615", "doubao-seed-1-6-flash-250615",
                           "deepseek-v3-2-251201", "kimi-k2-5-260127", "glm-4-7-251222"),
                          max_tokens_field="max_tokens", reasoning_field="reasoning_content"),
    "deepseek": _preset("DeepSeek", "https://api.deepseek.com", ("deepseek-chat", "deepseek-reasoner"),
                        max_tokens_field="max_tokens", reasoning_field="reasoning_content"),
    "moonshot": _preset("Moonshot (Kimi)", "https://api.moonshot.ai/v1",
                        ("kimi-k2.6", "kimi-k2.5", "moonshot-v1-8k", "moonshot-v1-32k", "moonshot-v1-128k"),
                        max_tokens_field="max_tokens", reasoning_field="reasoning_content"),
    "zhipu": _preset("Zhipu (GLM)", "https://open.bigmodel.cn/api/paas/v4",
                     ("glm-4.6", "glm-4.5", "glm-4.5-air", "glm-4.5-flash"),
                     stream_usage="omit", max_tokens_field="max_tokens", reasoning_field="reasoning_content"),
    # Mistral answers 422 extra_forbidden to any field it does not know, stream_options included.
    "mistral": _preset("Mistral", "https://api.mistral.ai/v1",
                       ("mistral-large-latest", "mistral-medium-latest", "mistral-small-latest", "codestral-latest"),
                       stream_usage="omit", max_tokens_field="max_tokens"),
    "groq": _preset("Groq", "https://api.groq.com/openai/v1",
                    ("llama-3.3-70b-versatile", "llama-3.1-8b-instant", "openai/gpt-oss-120b"),
                    reasoning_field="reasoning"),
    "together": _preset("Together AI", "https://api.together.xyz/v1",
                        ("meta-llama/Llama-3.3-70B-Instruct-Turbo", "deepseek-ai/DeepSeek-V3",
                         "Qwen/Qwen2.5-72B-Instruct-Turbo"), max_tokens_field="max_tokens"),
    "openrouter": _preset("OpenRouter", "https://openrouter.ai/api/v1",
                          ("openai/gpt-4o-mini", "anthropic/claude-sonnet-4", "google/gemini-2.5-flash",
                           "deepseek/deepseek-chat"), reasoning_field="reasoning"),
    "ollama": _preset("Ollama (local)", "http://localhost:11434/v1", ("llama3.2", "qwen2.5", "nomic-embed-text"),
                      needs_key=False, max_tokens_field="max_tokens"),
    "vllm": _preset("vLLM (self-hosted)", None, (), needs_key=False, reasoning_field="reasoning_content"),
}

KINDS: dict[str, ProviderKind] = {     # in the order the console lists them
    "openai": ProviderKind(openai_chat, "https://api.openai.com/v1", media=openai_media),
    # Same format; the api_version option switches URL and auth. No default host: each
    # Azure resource has its own.
    "azure": ProviderKind(openai_chat, default_options={"api_version": "2024-10-21"}, media=openai_media),
    "anthropic": ProviderKind(anthropic_messages, "https://api.anthropic.com/v1", native=anthropic_native),
    "gemini": ProviderKind(gemini, "https://generativelanguage.googleapis.com/v1beta"),
    # Converse/ConverseStream, SigV4-signed; each region has its own host.
    "bedrock": ProviderKind(bedrock_converse, embeddings=False,
                            regional_url="https://bedrock-runtime.{region}.amazonaws.com"),
    # Answered in-process (create_app gives the transport gateway.mock_upstream for mock://).
    "mock": ProviderKind(openai_chat, "mock://local/v1", needs_key=False, fixed_base_url=True,
                         media=openai_media),
    **PRESETS,
}
ADAPTERS: dict[str, ModuleType] = {name: kind.adapter for name, kind in KINDS.items()}
NATIVE: dict[str, ModuleType] = {name: kind.native for name, kind in KINDS.items() if kind.native}
# What the console shows for an empty Base URL; regional kinds show their URL pattern.
DEFAULT_BASE_URLS: dict[str, str] = {name: kind.default_base_url or kind.regional_url
                                     for name, kind in KINDS.items()
                                     if kind.default_base_url or kind.regional_url}


def spec_for(kind: str, preset: str | None = None) -> ProviderKind:
    """The entry a provider of `kind` (optionally with `preset`) is set up from.

    Raises KeyError for an unknown kind, ValueError for an unknown preset or one of another format."""
    spec = KINDS[kind]
    if not preset:
        return spec
    chosen = PRESETS.get(preset)
    if chosen is None:
        raise ValueError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
    if chosen.preset_of != kind and preset != kind:
        raise ValueError(f"preset '{preset}' is for kind {chosen.preset_of}, not {kind}")
    return chosen


def needs_key(kind: str, options: dict | None = None) -> bool:
    """Whether a provider of `kind` (and the preset its options name) must be given an API key."""
    try:
        return spec_for(kind, (options or {}).get("preset")).needs_key
    except (KeyError, ValueError):
        return True


def resolve_endpoint(kind: str, base_url: str | None, options: dict | None,
                     preset: str | None = None, region: str = "") -> tuple[str, dict | None]:
    """The base URL and options a provider of `kind` really uses, defaults filled in.

    With `preset`, the preset's URL and quirk options are the defaults and its name is kept
    in the options (`preset`), so the edit form and later saves know it.
    `options` comes back as given (None too, meaning "leave stored options alone") unless a
    default had to be added, then as a new dict. Raises KeyError for an unknown kind and
    ValueError for a wrong preset or when the kind has no default URL and none was given (for a
    regional kind: no valid region either)."""
    preset = preset or (options or {}).get("preset") or None
    spec = spec_for(kind, preset)
    if spec.fixed_base_url:
        url = spec.default_base_url
    else:
        url = (base_url or spec.default_base_url or "").strip()
    if not url and spec.regional_url:
        url = regional_url(kind, region)
    if not url:
        raise ValueError("this provider kind needs a base URL")
    defaults = {**spec.default_options, **({"preset": preset} if preset and preset != kind else {})}
    missing = {k: v for k, v in defaults.items() if not (options or {}).get(k)}
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
