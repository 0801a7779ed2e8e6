"""Inbound API dialects translated to OpenAI chat and back: pure functions, one module per family."""
