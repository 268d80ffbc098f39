from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.core.config import LLMProvider, Settings

GOOD_SECRET = "a" * 40


def make(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_local_defaults_work_out_of_the_box() -> None:
    settings = make()
    assert settings.environment == "local"
    assert settings.database_url.startswith("sqlite+aiosqlite:///")
    assert settings.llm_provider is LLMProvider.LMSTUDIO
    assert settings.lmstudio_base_url == "http://localhost:1234/v1"


def test_production_refuses_default_secret_key() -> None:
    with pytest.raises(ValidationError, match="SECRET_KEY must be set in production"):
        make(environment="production", first_superuser_password="a-real-password")


def test_production_refuses_short_secret_key() -> None:
    with pytest.raises(ValidationError, match="at least 32 characters"):
        make(environment="production", secret_key="short", first_superuser_password="pw-12345")


def test_production_refuses_default_admin_password() -> None:
    with pytest.raises(ValidationError, match="FIRST_SUPERUSER_PASSWORD"):
        make(environment="production", secret_key=GOOD_SECRET)


def test_production_starts_with_real_secrets() -> None:
    settings = make(
        environment="production", secret_key=GOOD_SECRET, first_superuser_password="s3cret-pw"
    )
    assert settings.environment == "production"


def test_env_vars_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_PROVIDER", "lmstudio")
    monkeypatch.setenv("LMSTUDIO_BASE_URL", "http://127.0.0.2:1234/v1")
    monkeypatch.setenv("LMSTUDIO_MODEL", "local-model")
    monkeypatch.setenv("BACKEND_CORS_ORIGINS", "http://a.test, http://b.test")
    settings = make()
    assert settings.lmstudio_base_url == "http://127.0.0.2:1234/v1"
    assert settings.lmstudio_model == "local-model"
    assert settings.backend_cors_origins == ["http://a.test", "http://b.test"]


def test_unknown_provider_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_PROVIDER", "skynet")
    with pytest.raises(ValidationError, match="llm_provider"):
        make()


def test_secrets_do_not_show_in_repr() -> None:
    settings = make(secret_key=GOOD_SECRET, openai_api_key="sk-very-secret")
    assert GOOD_SECRET not in repr(settings)
    assert "sk-very-secret" not in repr(settings)


def test_base_urls_must_be_http_and_lose_trailing_slash() -> None:
    assert make(lmstudio_base_url="http://127.0.0.2:1234/v1/").lmstudio_base_url == (
        "http://127.0.0.2:1234/v1"
    )
    with pytest.raises(ValidationError, match="must start with http:// or https://"):
        make(lmstudio_base_url="localhost:1234/v1")


@pytest.mark.parametrize(
    "url",
    ["http://user:s3cret-pw@127.0.0.2:1234/v1", "https://:s3cret-pw@api.example/v1"],
    ids=["user_and_password", "password_only"],
)
def test_base_urls_with_credentials_are_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(ValidationError, match="must not contain a user name or password") as e:
        make(lmstudio_base_url=url)
    assert "s3cret" not in str(e.value)
    assert "s3cret" not in " ".join(error["msg"] for error in e.value.errors())


def test_shutdown_drain_must_fit_in_the_grace() -> None:
    assert make().shutdown_grace_seconds == 30
    assert make().shutdown_drain_seconds == 5
    with pytest.raises(ValidationError, match="SHUTDOWN_DRAIN_SECONDS"):
        make(shutdown_drain_seconds=40, shutdown_grace_seconds=30)


def test_fallback_env_lists_are_comma_separated_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_FALLBACK_PROVIDERS", " ollama, OpenAI ,,")
    monkeypatch.setenv("LLM_FALLBACK_ALLOW_CLOUD", "openai")
    settings = make()
    assert settings.llm_fallback_providers == [LLMProvider.OLLAMA, LLMProvider.OPENAI]
    assert settings.llm_fallback_allow_cloud == [LLMProvider.OPENAI]
    assert make(llm_fallback_providers="").llm_fallback_providers == []


def test_an_unknown_fallback_provider_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_FALLBACK_PROVIDERS", "ollama,skynet")
    with pytest.raises(ValidationError, match="llm_fallback_providers"):
        make()
