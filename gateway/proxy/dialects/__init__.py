"""Inbound API dialects (Responses, Messages, legacy Completions) translated to OpenAI chat and
back: pure functions, one module per family."""
