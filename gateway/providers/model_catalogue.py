"""What the gateway knows about public models without asking their vendor: mode, context
window, max output and capabilities, from a catalogue file.

The shipped file is gateway/data/models.json, generated (`gateway models refresh`) from LiteLLM's
model_prices_and_context_window.json (MIT). A refreshed copy in the instance folder takes
precedence. Lookups are dict reads on a copy loaded once per file version (mtime)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import orjson

from gateway.paths import PACKAGE

SHIPPED = PACKAGE / "data" / "models.json"
FILE_NAME = "models.json"           # in the instance folder, written by `gateway models refresh`
SOURCE_URL = ("https://raw.githubusercontent.com/BerriAI/litellm/main/"
              "model_prices_and_context_window.json")

# LiteLLM's mode -> ours; modes not listed (video, ocr, search, ...) are left out.
MODES = {"chat": "chat", "responses": "chat", "completion": "chat", "embedding": "embedding",
         "image_generation": "image", "image_edit": "image", "audio_transcription": "audio",
         "audio_speech": "audio", "rerank": "rerank", "moderation": "moderation"}
# LiteLLM's supports_* flags -> the capability names routing matches requests against.
CAPABILITIES = {"supports_function_calling": "tools", "supports_vision": "vision",
                "supports_response_schema": "json", "supports_reasoning": "reasoning",
                "supports_audio_input": "audio", "supports_audio_output": "audio"}
# Clouds and resellers: their entries stay under their own provider/model key, but never
# claim a model's bare name (their limits and modes differ from the vendor's own API).
RESELLERS = ("azure", "azure_ai", "bedrock", "bedrock_converse", "vertex_ai", "sagemaker",
             "openrouter", "together_ai", "fireworks_ai", "deepinfra", "anyscale", "replicate",
             "databricks", "watsonx", "snowflake", "oci", "nscale", "github", "gradient_ai")


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One model as the catalogue describes it."""
    mode: str
    context_window: int | None = None
    max_output: int | None = None
    capabilities: tuple[str, ...] = ()


_cache: dict[str, tuple[float, dict[str, ModelInfo], dict]] = {}


def path_for(instance_path: str | None) -> Path:
    """The catalogue file in use: the instance folder's refreshed one, else the shipped one."""
    if instance_path:
        refreshed = Path(instance_path) / FILE_NAME
        if refreshed.is_file():
            return refreshed
    return SHIPPED


def _load(path: Path) -> tuple[dict[str, ModelInfo], dict]:
    key = str(path)
    mtime = os.stat(path).st_mtime
    hit = _cache.get(key)
    if hit is None or hit[0] != mtime:
        doc = orjson.loads(path.read_bytes())
        models = {name: ModelInfo(e["mode"], e.get("context"), e.get("max_output"), tuple(e.get("caps", ())))
                  for name, e in doc["models"].items()}
        hit = _cache[key] = (mtime, models, {k: v for k, v in doc.items() if k != "models"})
    return hit[1], hit[2]


def lookup(model: str, instance_path: str | None = None) -> ModelInfo | None:
    """The catalogue's entry for `model` (as the vendor names it, or as provider/model)."""
    models, _ = _load(path_for(instance_path))
    name = model.strip().lower()
    if name.startswith("models/"):      # Gemini's resource names
        name = name[7:]
    return models.get(name) or (models.get(name.split("/", 1)[1]) if "/" in name else None)


def about(instance_path: str | None = None) -> dict:
    """The file's header: source, licence, date, and how many models it holds."""
    path = path_for(instance_path)
    models, header = _load(path)
    return {**header, "path": str(path), "count": len(models)}


def build(litellm: dict, source: str) -> dict:
    """Our catalogue from LiteLLM's JSON: the fields we use, keyed by model name and by
    provider/model, lower-case."""
    models: dict[str, dict] = {}
    bare: dict[str, dict] = {}
    for key, spec in litellm.items():
        if not isinstance(spec, dict) or MODES.get(spec.get("mode")) is None:
            continue
        entry = {"mode": MODES[spec["mode"]]}
        context = spec.get("max_input_tokens") or spec.get("max_tokens")
        if isinstance(context, int) and context > 0:
            entry["context"] = context
        if isinstance(spec.get("max_output_tokens"), int):
            entry["max_output"] = spec["max_output_tokens"]
        caps = sorted({cap for flag, cap in CAPABILITIES.items() if spec.get(flag) is True})
        if entry["mode"] == "embedding":
            caps = ["embeddings"]
        elif entry["mode"] == "chat" and "tools" in caps and "json" not in caps:
            caps = sorted([*caps, "json"])      # JSON mode comes with function calling in practice
        if caps:
            entry["caps"] = caps
        key = key.lower()
        models[key] = entry
        provider = str(spec.get("litellm_provider") or "").lower()
        prefix, _, rest = key.partition("/")
        if rest and prefix == provider and not provider.startswith(RESELLERS):
            bare.setdefault(rest, entry)
    for name, entry in bare.items():
        models.setdefault(name, entry)
    return {"source": source, "licence": "MIT (LiteLLM, BerriAI)", "generated": date.today().isoformat(),
            "models": dict(sorted(models.items()))}


def write(catalogue: dict, instance_path: str) -> Path:
    """Save a built catalogue into the instance folder, where it takes precedence."""
    path = Path(instance_path) / FILE_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(dumps(catalogue))
    tmp.replace(path)       # readers never see half a file
    return path


def dumps(catalogue: dict) -> bytes:
    """The catalogue as JSON with one model per line, so a regenerated file diffs readably."""
    header = {k: v for k, v in catalogue.items() if k != "models"}
    lines = [orjson.dumps(name) + b": " + orjson.dumps(entry) for name, entry in catalogue["models"].items()]
    return (orjson.dumps(header)[:-1] + b', "models": {\n' + b",\n".join(lines) + b"\n}}\n")
