"""User-facing text, in the requester's language: the one language resolver and every phrase.

The language comes from the request's metadata (`lang`, `language` or `locale`, in that order;
"fr", "fr-FR", "fr_FR.UTF-8" and "fr-FR,fr;q=0.9" all mean French). Anything unsupported falls
back to English. The notifier's message and the placeholder's caption both ask `resolve_language`,
so one request never reads two languages. Messages name the provider's job id (and generation id)
because that is what a person quotes to support, as the seed's "Option 2" does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final, Literal, get_args

from schemas.events import clip_message

__all__ = [
    "DEFAULT_LANGUAGE",
    "LANGUAGE_KEYS",
    "SUPPORTED_LANGUAGES",
    "Language",
    "download_unavailable_message",
    "placeholder_caption",
    "resolve_language",
]

Language = Literal["en", "fr", "es", "de"]
SUPPORTED_LANGUAGES: Final[tuple[Language, ...]] = get_args(Language)
DEFAULT_LANGUAGE: Final[Language] = "en"
LANGUAGE_KEYS: Final = ("lang", "language", "locale")
# The first subtag of a language tag / POSIX locale: letters up to the first - _ . , ; or space.
_PRIMARY_SUBTAG = re.compile(r"^\s*([A-Za-z]{2,3})(?:[-_.,;\s]|$)")

# {job} and {generation} are filled in; every language says the same three things: the video was
# generated, it cannot be downloaded yet, and what happens next.
_GENERATED: Final[dict[Language, str]] = {
    "en": (
        "Your video was generated successfully (job ID: {job}, generation ID: {generation}), "
        "but it cannot be downloaded yet."
    ),
    "fr": (
        "Votre vidéo a bien été générée (ID du job : {job}, ID de génération : {generation}), "
        "mais elle n'est pas encore téléchargeable."
    ),
    "es": (
        "Su vídeo se generó correctamente (ID del trabajo: {job}, ID de generación: "
        "{generation}), pero todavía no se puede descargar."
    ),
    "de": (
        "Ihr Video wurde erfolgreich erstellt (Job-ID: {job}, Generierungs-ID: {generation}), "
        "kann aber noch nicht heruntergeladen werden."
    ),
}
_WILL_RETRY: Final[dict[Language, str]] = {
    "en": "We will keep trying to download it and let you know as soon as it is available.",
    "fr": (
        "Nous réessayons automatiquement de la récupérer et vous préviendrons dès qu'elle "
        "sera disponible."
    ),
    "es": "Seguiremos intentando descargarlo y le avisaremos en cuanto esté disponible.",
    "de": (
        "Wir versuchen weiterhin, es herunterzuladen, und benachrichtigen Sie, sobald es "
        "verfügbar ist."
    ),
}
_WILL_TELL: Final[dict[Language, str]] = {
    "en": "We will let you know when it becomes available; please keep the job ID for reference.",
    "fr": (
        "Nous vous contacterons dès qu'elle sera disponible ; conservez l'ID du job comme "
        "référence."
    ),
    "es": "Le avisaremos cuando esté disponible; conserve el ID del trabajo como referencia.",
    "de": (
        "Wir benachrichtigen Sie, sobald es verfügbar ist; bitte bewahren Sie die Job-ID "
        "als Referenz auf."
    ),
}
# The band across the bottom of a placeholder video.
_PLACEHOLDER_CAPTION: Final[dict[Language, str]] = {
    "en": "Video on its way",
    "fr": "Vidéo en préparation",
    "es": "Vídeo en camino",
    "de": "Video ist unterwegs",
}
# Ids come from providers and could in principle be long; the message itself is clipped to
# what UserNotified.message allows.
_MAX_ID = 200


def _supported(value: str) -> Language | None:
    for language in SUPPORTED_LANGUAGES:
        if value == language:
            return language
    return None


def _language_of(value: str) -> Language | None:
    match = _PRIMARY_SUBTAG.match(value)
    if match is None:
        return None
    return _supported(match.group(1).lower())


def resolve_language(metadata: Mapping[str, str] | None) -> Language:
    """The supported language the metadata asks for (keys matched case-insensitively), else en."""
    if not metadata:
        return DEFAULT_LANGUAGE
    lowered = {key.lower(): value for key, value in metadata.items()}
    for key in LANGUAGE_KEYS:
        value = lowered.get(key)
        if value:
            language = _language_of(value)
            if language is not None:
                return language
    return DEFAULT_LANGUAGE


def download_unavailable_message(
    language: str, *, job_id: str, generation_id: str, will_retry: bool = True
) -> str:
    """'Your video was generated (job …) but cannot be downloaded yet; we will …'."""
    lang = _supported(language) or DEFAULT_LANGUAGE
    generated = _GENERATED[lang].format(job=job_id[:_MAX_ID], generation=generation_id[:_MAX_ID])
    then = (_WILL_RETRY if will_retry else _WILL_TELL)[lang]
    return clip_message(f"{generated} {then}")


def placeholder_caption(language: str) -> str:
    """The placeholder video's caption ("Video on its way"); English for an unsupported code."""
    return _PLACEHOLDER_CAPTION[_supported(language) or DEFAULT_LANGUAGE]
