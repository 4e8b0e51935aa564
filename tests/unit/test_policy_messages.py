"""User-facing text: every supported language says everything, and messages fit the contract."""

from __future__ import annotations

import uuid

import pytest

from schemas.events import (
    MESSAGE_MAX_CHARS,
    PUBLIC_EVENTS,
    DownloadGaveUp,
    DownloadUnavailable,
    JobCancelled,
    JobFailed,
    UserNotified,
    clip_message,
)
from vidpipe.policy.messages import (
    DEFAULT_LANGUAGE,
    SUPPORTED_LANGUAGES,
    download_unavailable_message,
    placeholder_caption,
    resolve_language,
)


@pytest.mark.parametrize("will_retry", [True, False])
def test_every_language_has_its_own_message_and_caption(will_retry: bool) -> None:
    messages = {
        language: download_unavailable_message(
            language, job_id="task_1", generation_id="gen_1", will_retry=will_retry
        )
        for language in SUPPORTED_LANGUAGES
    }
    captions = {language: placeholder_caption(language) for language in SUPPORTED_LANGUAGES}
    assert len(set(messages.values())) == len(SUPPORTED_LANGUAGES)
    assert len(set(captions.values())) == len(SUPPORTED_LANGUAGES)
    assert all("task_1" in text and "gen_1" in text for text in messages.values())


@pytest.mark.parametrize("language", SUPPORTED_LANGUAGES)
def test_each_supported_language_is_what_its_tag_resolves_to(language: str) -> None:
    assert resolve_language({"lang": language}) == language
    assert resolve_language({"locale": f"{language.upper()}-XX.UTF-8"}) == language


def test_unsupported_languages_read_english() -> None:
    assert DEFAULT_LANGUAGE == "en"
    assert placeholder_caption("pt") == placeholder_caption("en")
    portuguese = download_unavailable_message("pt", job_id="j", generation_id="g")
    assert portuguese == download_unavailable_message("en", job_id="j", generation_id="g")


def test_long_ids_never_make_a_message_too_long() -> None:
    text = download_unavailable_message("de", job_id="j" * 5000, generation_id="g" * 5000)
    assert len(text) <= MESSAGE_MAX_CHARS
    UserNotified(
        event_id=uuid.uuid4(),
        request_id="r",
        channel="record",
        language="de",
        message=text,
        delivered=True,
    )


@pytest.mark.parametrize(
    ("text", "clipped"),
    [
        ("", ""),
        ("short", "short"),
        ("x" * MESSAGE_MAX_CHARS, "x" * MESSAGE_MAX_CHARS),
        ("y" * (MESSAGE_MAX_CHARS + 1), "y" * MESSAGE_MAX_CHARS),
    ],
)
def test_clip_message_keeps_what_fits(text: str, clipped: str) -> None:
    assert clip_message(text) == clipped


def test_the_limit_is_the_one_every_message_field_declares() -> None:
    with_message = {
        cls.__name__: cls.model_json_schema()["properties"]["message"]["maxLength"]
        for cls in PUBLIC_EVENTS
        if "message" in cls.model_fields
    }
    assert with_message == {
        cls.__name__: MESSAGE_MAX_CHARS
        for cls in (JobFailed, DownloadUnavailable, DownloadGaveUp, UserNotified, JobCancelled)
    }
