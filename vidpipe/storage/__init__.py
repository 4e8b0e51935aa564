"""Where finished videos are kept: a local folder or Supabase Storage, named by a URL.

`base` holds the `VideoStorage` interface and the key rules, `local` and `supabase` the two
backends, `validation` the MP4 check every backend applies while it receives the bytes. This
module is the public face: the names callers use, and `storage_from_url`.

Storage URLs (``VIDPIPE_STORAGE_URL``), read by `storage_from_url`:

``file://PATH``
    A local folder. Everything after ``file://`` is the path: ``file:///srv/videos`` is absolute,
    ``file://.vidpipe/videos`` is relative to ``base_dir`` (default: the working directory).
``supabase://BUCKET@HOST``
    Supabase Storage at ``https://HOST`` (a bare project ref without dots means
    ``REF.supabase.co``; loopback hosts such as ``127.0.0.1:54321`` from ``supabase start`` use
    plain http).
``supabase://BUCKET``
    Supabase Storage at the URL in the ``SUPABASE_URL`` environment variable.

``BUCKET`` may be left empty (``supabase://@HOST``, ``supabase://``) for ``output-videos``. The
service-role key comes from the ``supabase_key`` argument, else ``SUPABASE_SERVICE_ROLE_KEY``,
``SUPABASE_SERVICE_KEY`` or ``SUPABASE_KEY``; it never appears in a URL, a log line or an error.

Keys follow `validate_key` (see `vidpipe.storage.base`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from vidpipe.errors import ConfigurationError, StorageError
from vidpipe.storage.base import StoredObject, VideoStorage, validate_key
from vidpipe.storage.local import LocalFolderStorage
from vidpipe.storage.supabase import DEFAULT_BUCKET, SupabaseStorage

__all__ = [
    "DEFAULT_BUCKET",
    "LocalFolderStorage",
    "StorageError",
    "StoredObject",
    "SupabaseStorage",
    "VideoStorage",
    "storage_from_url",
    "validate_key",
]

_KEY_ENV_NAMES = ("SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_SERVICE_KEY", "SUPABASE_KEY")
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def _supabase_base_url(host: str) -> str:
    try:
        parsed = urlsplit(f"//{host}")
        hostname, port = parsed.hostname or "", parsed.port
    except ValueError:
        raise ConfigurationError("supabase storage URL has an invalid host") from None
    if not hostname:
        raise ConfigurationError("supabase storage URL has an invalid host")
    if "." not in hostname and ":" not in hostname and hostname != "localhost" and port is None:
        return f"https://{hostname}.supabase.co"  # a bare project ref
    # `supabase start` serves plain http on loopback; everything else must be https.
    scheme = "http" if hostname in _LOOPBACK_HOSTS else "https"
    return f"{scheme}://{host}"


def storage_from_url(
    storage_url: str,
    *,
    supabase_key: SecretStr | None = None,
    base_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    public: bool = True,
    signed_url_ttl_s: int = 7 * 24 * 3600,
    tus_threshold_bytes: int | None = None,
) -> VideoStorage:
    """Build the storage a URL names (forms in the module docstring); ConfigurationError if none.

    `public`, `signed_url_ttl_s` and `tus_threshold_bytes` apply to Supabase (SupabaseStorage)."""
    env = os.environ if environ is None else environ
    if storage_url.startswith("file://"):
        raw_path = storage_url[len("file://") :]
        if not raw_path:
            raise ConfigurationError("file:// storage URL needs a path")
        path = Path(raw_path)
        if not path.is_absolute():
            path = (base_dir if base_dir is not None else Path.cwd()) / path
        return LocalFolderStorage(path)
    if storage_url.startswith("supabase://"):
        parts = urlsplit(storage_url)
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ConfigurationError("supabase storage URL takes the form supabase://BUCKET[@HOST]")
        if "@" in parts.netloc:
            bucket, host = parts.netloc.rsplit("@", 1)
            if not host:
                raise ConfigurationError("supabase://BUCKET@HOST needs a host")
            base_url = _supabase_base_url(host)
        else:
            bucket = parts.netloc
            env_url = env.get("SUPABASE_URL")
            if not env_url:
                raise ConfigurationError(
                    "supabase://BUCKET needs SUPABASE_URL (or use supabase://BUCKET@HOST)"
                )
            base_url = env_url
        key = supabase_key
        if key is None:
            found = next((env[name] for name in _KEY_ENV_NAMES if env.get(name)), None)
            key = SecretStr(found) if found else None
        if key is None or not key.get_secret_value():
            raise ConfigurationError(
                "Supabase storage needs a service-role key (SUPABASE_SERVICE_ROLE_KEY)"
            )
        return SupabaseStorage(
            base_url,
            key,
            bucket or DEFAULT_BUCKET,
            transport=transport,
            public=public,
            signed_url_ttl_s=signed_url_ttl_s,
            **({} if tus_threshold_bytes is None else {"tus_threshold_bytes": tus_threshold_bytes}),
        )
    scheme = storage_url.split(":", 1)[0] if ":" in storage_url else storage_url[:20]
    raise ConfigurationError(f"unknown storage URL scheme {scheme!r} (use file:// or supabase://)")
