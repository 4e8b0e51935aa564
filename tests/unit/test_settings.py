"""Settings never show a secret: not in their repr, not in their validation errors."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from vidpipe.settings import Settings

PASSWORD = "hunter2-db-password"
DATABASE = f"postgresql+psycopg://vidpipe:{PASSWORD}@db.example:5432/vidpipe?sslmode=require"


def test_the_repr_masks_the_database_password_and_every_secret() -> None:
    settings = Settings(
        database_url=DATABASE,
        webhook_secret=SecretStr("whsec_c2VjcmV0LXdlYmhvb2sta2V5LXZhbHVl"),
        kafka_bootstrap="broker.example:9092",
    )
    for shown in (repr(settings), str(settings)):
        assert PASSWORD not in shown and "c2VjcmV0" not in shown and "sslmode" not in shown
        assert "db.example:5432/vidpipe" in shown and "broker.example:9092" in shown
    assert settings.database_url == DATABASE  # only the display is masked
    assert PASSWORD not in settings.database_url_safe


def test_the_repr_of_settings_from_the_environment_is_masked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("VIDPIPE_DATABASE_URL", DATABASE)
    assert PASSWORD not in repr(Settings())


@pytest.mark.parametrize(
    "database_url",
    [
        f"mysql://vidpipe:{PASSWORD}@db.example/vidpipe",  # refused by our validator
        f"{PASSWORD}-not-a-url",
    ],
)
def test_validation_errors_do_not_quote_the_refused_value(
    monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    monkeypatch.setenv("VIDPIPE_DATABASE_URL", database_url)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert "database_url" in str(caught.value)
    assert PASSWORD not in str(caught.value) and PASSWORD not in repr(caught.value)


def test_type_errors_do_not_quote_the_value_either(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDPIPE_HTTP_TIMEOUT_S", PASSWORD)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert "http_timeout_s" in str(caught.value) and PASSWORD not in str(caught.value)
