"""User-facing messages, in the requester's language.

The language comes from the request's metadata (`lang`, `language` or `locale`, in that order;
"fr", "fr-FR", "fr_FR.UTF-8" and "fr-FR,fr;q=0.9" all mean French). Anything unsupported falls
back to English. Messages name the provider's job id (and generation id) because that is what a
person quotes to support, as the seed's "Option 2" does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

__all__ = [
    "DEFAULT_LANGUAGE",
    "LANGUAGE_KEYS",
    "SUPPORTED_LANGUAGES",
    "download_unavailable_message",
    "resolve_language",
]

DEFAULT_LANGUAGE: Final = "en"
LANGUAGE_KEYS: Final = ("lang", "language", "locale")
# The first subtag of a language tag / POSIX locale: letters up to the first - _ . , ; or space.
_PRIMARY_SUBTAG = re.compile(r"^\s*([A-Za-z]{2,3})(?:[-_.,;\s]|$)")

# {job} and {generation} are filled in; every language says the same three things: the video was
# generated, it cannot be downloaded yet, and what happens next.
_GENERATED: Final[dict[str, str]] = {
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
_WILL_RETRY: Final[dict[str, str]] = {
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
_WILL_TELL: Final[dict[str, str]] = {
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
SUPPORTED_LANGUAGES: Final = tuple(_GENERATED)
# UserNotified.message is bounded; ids come from providers and could in principle be long.
_MAX_MESSAGE = 2000
_MAX_ID = 200


def _language_of(value: str) -> str | None:
    match = _PRIMARY_SUBTAG.match(value)
    if match is None:
        return None
    primary = match.group(1).lower()
    return primary if primary in SUPPORTED_LANGUAGES else None


def resolve_language(metadata: Mapping[str, str] | None) -> str:
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
    lang = language if language in SUPPORTED_LANGUAGES else DEFAULT_LANGUAGE
    generated = _GENERATED[lang].format(job=job_id[:_MAX_ID], generation=generation_id[:_MAX_ID])
    then = (_WILL_RETRY if will_retry else _WILL_TELL)[lang]
    return f"{generated} {then}"[:_MAX_MESSAGE]
