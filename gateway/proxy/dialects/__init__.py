"""Inbound API dialects (Responses, legacy Completions, ...) translated to OpenAI chat and back."""
