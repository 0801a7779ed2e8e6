"""JSON schemas (tool parameters, structured output) as Gemini's OpenAPI-subset Schema takes them."""
from __future__ import annotations

# Gemini's Schema is an OpenAPI subset: any other key (additionalProperties, $schema, ...) is a 400.
SCHEMA_KEYS = {"type", "format", "title", "description", "nullable", "enum", "items", "properties",
               "required", "anyOf", "minItems", "maxItems", "minLength", "maxLength", "pattern",
               "minimum", "maximum", "minProperties", "maxProperties", "default", "example",
               "propertyOrdering"}
SCHEMA_FORMATS = {"enum", "date-time", "int32", "int64", "float", "double"}


def clean_schema(schema, root: dict | None = None, expanding: frozenset = frozenset()):
    """Keep the JSON-schema subset Gemini accepts; inline local $refs (pydantic emits them)."""
    if not isinstance(schema, dict):
        return schema
    root = schema if root is None else root
    ref = schema.get("$ref")
    if isinstance(ref, str):
        if ref in expanding:            # a recursive model: cut the cycle
            return {"type": "object"}
        expanding = expanding | {ref}
        found = root
        for key in ref.removeprefix("#/").split("/"):
            found = found.get(key) if isinstance(found, dict) else None
        schema = {**(found or {}), **{k: v for k, v in schema.items() if k != "$ref"}}
    out = {}
    for key, value in schema.items():
        if key == "const":
            out["enum"] = [value]
        elif key == "oneOf":
            out["anyOf"] = [clean_schema(s, root, expanding) for s in value]
        elif key not in SCHEMA_KEYS:
            continue
        elif key == "type" and isinstance(value, list):     # ["string", "null"]
            types = [t for t in value if t != "null"]
            if len(types) < len(value):
                out["nullable"] = True
            if len(types) == 1:
                out["type"] = types[0]
            elif types:
                out["anyOf"] = [{"type": t} for t in types]
        elif key == "properties":
            if value:       # Gemini rejects an empty properties map
                out[key] = {name: clean_schema(s, root, expanding) for name, s in value.items()}
        elif key == "items":
            out[key] = clean_schema(value, root, expanding)
        elif key == "anyOf":
            out[key] = [clean_schema(s, root, expanding) for s in value]
        elif key == "format" and value not in SCHEMA_FORMATS:
            continue
        else:
            out[key] = value
    return out
