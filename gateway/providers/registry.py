"""Which adapter module speaks each provider kind's wire format."""
from types import ModuleType

from gateway.providers import anthropic_messages, gemini, openai_chat

ADAPTERS: dict[str, ModuleType] = {
    "openai": openai_chat,
    "azure": openai_chat,       # same format; the api_version option switches URL and auth
    "mock": openai_chat,        # answered in-process by gateway.mock_upstream
    "anthropic": anthropic_messages,
    "gemini": gemini,
}
