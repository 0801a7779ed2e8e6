"""The provider-kind registry: adapters and the endpoint defaults each kind gets."""
import pytest

from gateway.providers import registry


def test_adapters_follow_the_kinds():
    assert registry.ADAPTERS == {name: k.adapter for name, k in registry.KINDS.items()}
    assert list(registry.KINDS) == ["openai", "azure", "anthropic", "gemini", "bedrock", "mock", *registry.PRESETS]


def test_default_base_url_fills_in_and_entered_urls_are_stripped():
    assert registry.resolve_endpoint("openai", None, None) == ("https://api.openai.com/v1", None)
    assert registry.resolve_endpoint("gemini", " https://g.example/v1beta ", None)[0] == (
        "https://g.example/v1beta")


def test_the_mock_always_answers_in_process():
    assert registry.resolve_endpoint("mock", "https://elsewhere.example/v1", None) == (
        "mock://local/v1", None)
    assert not registry.KINDS["mock"].needs_key


def test_azure_needs_a_url_and_gets_a_default_api_version():
    with pytest.raises(ValueError):
        registry.resolve_endpoint("azure", "", {"api_version": "2025-01-01"})
    given = {"api_version": ""}
    url, options = registry.resolve_endpoint("azure", "https://r.example", given)
    assert options == {"api_version": "2024-10-21"} and given == {"api_version": ""}
    kept = {"api_version": "2025-01-01"}
    assert registry.resolve_endpoint("azure", "https://r.example", kept)[1] is kept


def test_unknown_kind_is_a_key_error():
    with pytest.raises(KeyError):
        registry.resolve_endpoint("nope", "https://x.example", None)


def test_bedrock_builds_its_url_from_the_region():
    assert registry.resolve_endpoint("bedrock", None, None, region="eu-west-1") == (
        "https://bedrock-runtime.eu-west-1.amazonaws.com", None)
    assert registry.resolve_endpoint("bedrock", "https://vpce.example", None, region="eu-west-1")[0] == (
        "https://vpce.example")
    with pytest.raises(ValueError):
        registry.resolve_endpoint("bedrock", None, None, region="")
    assert not registry.KINDS["bedrock"].embeddings and registry.KINDS["bedrock"].needs_key
