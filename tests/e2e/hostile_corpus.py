"""The hostile corpus: raw messages no stage may choke on, as data (issue 8, item 9).

Each entry is the exact bytes of one Kafka record (key, value, headers) on one topic the stages
read, with where it must end: in the dead-letter topic, once per stage that reads that topic
(`deadletter`), and, where the request is known to a stage that reports failures, a `JobFailed`
in the records too; or a `JobFailed` with a reason and no dead letter (`job_failed`: the
request is valid but cannot be carried, e.g. an input image on a private address); or
`stored` (valid, though it looks hostile: nothing in the pipeline follows it).

Everything is built from the topic prefix alone, so the corpus is the same on every run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from schemas.events import derive_event_id
from vidpipe.bus.deadletter import JOB_FAILED_STAGE

__all__ = ["READERS", "Entry", "build_corpus"]

End = Literal["deadletter", "job_failed", "stored"]
Client = Literal["kcat", "python"]

#: Which of the pipeline's stages (submitter, poller, fetcher, recorder) read each topic suffix,
#: by the stage name their dead letters carry (services/*/app.py, vidpipe/bus/timers.py).
READERS: dict[str, frozenset[str]] = {
    "generation.requested": frozenset({"submitter", "recorder"}),
    "submitter.due": frozenset({"submitter"}),
    "job.submitted": frozenset({"poller", "recorder"}),
    "poller.due": frozenset({"poller"}),
    # The submitter reads both to free a provider's quota slot.
    "job.succeeded": frozenset({"fetcher", "submitter", "recorder"}),
    "job.failed": frozenset({"submitter", "recorder"}),
    "job.progressed": frozenset({"recorder"}),
    "download.unavailable": frozenset({"recorder"}),
    "video.stored": frozenset({"recorder"}),
    "download.retry": frozenset({"recorder"}),
    "download.gaveup": frozenset({"recorder"}),
    "user.notified": frozenset({"recorder"}),
    # Timer topics are read by the stage's timer relay, which dead-letters under its stage.
    "timers.submitter": frozenset({"submitter"}),
    "timers.submitter.30s": frozenset({"submitter"}),
    "timers.poller": frozenset({"poller"}),
    "timers.poller.5s": frozenset({"poller"}),
}


@dataclass(frozen=True)
class Entry:
    name: str
    cls: str
    suffix: str  # the topic without its prefix
    value: bytes | None  # None: a tombstone
    key: bytes | None
    end: End
    client: Client
    headers: tuple[tuple[str, bytes | None], ...] = ()
    # The request id a JobFailed must carry (end "job_failed", or a dead letter whose request a
    # reporting stage knows); None when no request can be named.
    failed_request_id: str | None = None
    stages: frozenset[str] = field(default_factory=frozenset)
    # A forged timer is valid: its relay fires it as (topic suffix, key, value), and that
    # message is what the target's readers dead-letter.
    fired: tuple[str, bytes, bytes] | None = None

    def topic(self, prefix: str) -> str:
        return f"{prefix}{self.suffix}"

    def lettered(self, prefix: str) -> tuple[str, bytes | None, bytes | None]:
        """The (topic, key, value) the dead letters of this entry name as their original."""
        if self.fired is not None:
            suffix, key, value = self.fired
            return f"{prefix}{suffix}", key, value
        return self.topic(prefix), self.key, self.value


class _Builder:
    """Collects entries; request ids are prefixed so every run has its own."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.entries: list[Entry] = []

    def rid(self, name: str) -> str:
        return f"{self.prefix}h-{name}"

    def add(
        self,
        name: str,
        cls: str,
        value: bytes | None,
        *,
        suffix: str = "generation.requested",
        key: Literal["name"] | bytes | None = "name",
        headers: tuple[tuple[str, bytes | None], ...] = (),
        end: End = "deadletter",
        client: Client = "python",
        failed_request_id: str | None = None,
        fired: tuple[str, bytes, bytes] | None = None,
    ) -> None:
        raw_key = self.rid(name).encode() if key == "name" else key
        read_by = READERS[fired[0] if fired else suffix]
        stages = read_by if end == "deadletter" else frozenset()
        self.entries.append(
            Entry(
                name=name,
                cls=cls,
                suffix=suffix,
                value=value,
                key=raw_key,
                end=end,
                client=client,
                headers=headers,
                failed_request_id=failed_request_id,
                stages=stages,
                fired=fired,
            )
        )

    def request(self, name: str, **fields: Any) -> dict[str, Any]:
        """A valid request body, then `fields` laid over it (a None value removes a field)."""
        body: dict[str, Any] = {"request_id": self.rid(name), "prompt": f"hostile {name}"}
        for field_name, value in fields.items():
            if value is None:
                body.pop(field_name, None)
            else:
                body[field_name] = value
        return body

    def bad_request(
        self,
        name: str,
        cls: str,
        *,
        client: Client = "python",
        reported: bool = True,
        **fields: Any,
    ) -> None:
        """A request the schema refuses: dead-lettered by the submitter and the recorder.

        `reported`: the request id is valid, so the submitter also publishes JobFailed for it.
        """
        body = self.request(name, **fields)
        self.add(
            name,
            cls,
            json.dumps(body).encode(),
            client=client,
            failed_request_id=str(body["request_id"]) if reported else None,
        )

    def job_event(self, name: str, event_type: str, **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "event_id": str(derive_event_id(self.rid(name), "hostile", event_type)),
            "event_type": event_type,
            "request_id": self.rid(name),
            "provider": "azure-sora",
            "provider_job_id": f"job-{name}",
        }
        body.update(fields)
        return body

    def bad_event(self, name: str, cls: str, suffix: str, body: object, **kw: Any) -> None:
        """An event the topic's readers refuse; reporting readers name its request, if valid."""
        # Timer relays only dead-letter; the stages' own subscribers also report JobFailed.
        reporting = not suffix.startswith("timers.") and any(
            stage in JOB_FAILED_STAGE for stage in READERS[suffix]
        )
        rid = body.get("request_id") if isinstance(body, dict) else None
        valid_rid = isinstance(rid, str) and rid.startswith(self.prefix) and len(rid) <= 128
        self.add(
            name,
            cls,
            json.dumps(body).encode(),
            suffix=suffix,
            failed_request_id=rid if reporting and valid_rid else None,
            **kw,
        )


def _nest(depth: int, inner: str = "0") -> str:
    return "[" * depth + inner + "]" * depth


def build_corpus(prefix: str) -> list[Entry]:
    b = _Builder(prefix)
    rid = b.rid

    # --- deep JSON nesting: RecursionError in the decoder, before any schema ---------------
    b.add("deep-array", "deep-nesting", _nest(5000).encode())
    b.add("deep-object", "deep-nesting", ('{"a":' * 5000 + "0" + "}" * 5000).encode())
    deep_meta = json.dumps(b.request("deep-meta"))[:-1] + ', "metadata": ' + _nest(4000) + "}"
    b.add("deep-metadata", "deep-nesting", deep_meta.encode(), client="kcat")
    b.add("deep-in-prompt", "deep-nesting", ('{"prompt": ' + _nest(3000) + "}").encode())
    b.add("deep-on-job-submitted", "deep-nesting", _nest(5000).encode(), suffix="job.submitted")
    b.add("deep-on-job-succeeded", "deep-nesting", _nest(5000).encode(), suffix="job.succeeded")
    b.add("deep-timer", "deep-nesting", _nest(5000).encode(), suffix="timers.poller")

    # --- ids the storage and the records cannot carry ---------------------------------------
    for name, bad_id in (
        ("dot", "."),
        ("dotdot", ".."),
        ("dots3", "..."),
        ("dot-slash", "../etc/passwd"),
        ("slash", f"{prefix}a/b"),
        ("space", f"{prefix}a b"),
        ("newline", f"{prefix}a\nb"),
        ("unicode-id", f"{prefix}vidéo"),
        ("empty-id", ""),
    ):
        b.bad_request(name, "bad-id", reported=False, request_id=bad_id, client="kcat")
    b.bad_request("id-129", "too-long", reported=False, request_id=prefix + "x" * 129)
    b.bad_request("id-100k", "too-long", reported=False, request_id="x" * 100_000)
    b.bad_request("parent-too-long", "too-long", parent_request_id="p" * 129)
    b.bad_request("prompt-4001", "too-long", prompt="p" * 4001)
    b.bad_request("metadata-value-513", "too-long", metadata={"k": "v" * 513})
    b.bad_request("metadata-33-keys", "too-long", metadata={f"k{i}": "v" for i in range(33)})
    b.bad_request("model-129", "too-long", model="m" * 129)
    b.bad_event(
        "generation-id-300",
        "too-long",
        "job.succeeded",
        b.job_event("generation-id-300", "JobSucceeded", generation_ids=["g" * 300]),
    )
    b.bad_event(
        "generation-ids-17",
        "too-long",
        "job.succeeded",
        b.job_event(
            "generation-ids-17", "JobSucceeded", generation_ids=[f"g{i}" for i in range(17)]
        ),
    )
    b.bad_event(
        "job-id-257",
        "too-long",
        "job.submitted",
        b.job_event("job-id-257", "JobSubmitted", provider_job_id="j" * 257),
    )

    # --- NUL and lone surrogates: text PostgreSQL cannot store -----------------------------
    b.bad_request("nul-prompt", "nul", prompt="a\u0000b")
    b.bad_request("nul-metadata", "nul", metadata={"lang": "fr\u0000"})
    b.bad_request("nul-metadata-key", "nul", metadata={"k\u0000": "v"})
    b.bad_request("nul-model", "nul", model="sora\u0000")
    b.bad_request("nul-id", "nul", reported=False, request_id=f"{prefix}a\u0000b")
    b.bad_event(
        "nul-job-id",
        "nul",
        "job.succeeded",
        b.job_event("nul-job-id", "JobSucceeded", provider_job_id="j\u0000", generation_ids=["g"]),
    )
    b.bad_event(
        "ctl-generation-id",
        "nul",
        "job.succeeded",
        b.job_event("ctl-generation-id", "JobSucceeded", generation_ids=["g\u0001\u001f"]),
    )
    # json.dumps writes a lone surrogate as the escape \ud800: valid JSON, invalid text.
    b.bad_request("surrogate-prompt", "lone-surrogate", prompt="a\ud800b", client="kcat")
    b.bad_request("surrogate-metadata", "lone-surrogate", metadata={"k": "\udfff"})
    b.bad_request("surrogate-metadata-key", "lone-surrogate", metadata={"\ud83d": "v"})
    b.bad_request("surrogate-id", "lone-surrogate", reported=False, request_id=f"{prefix}\ud800")

    # --- bytes that are not UTF-8 ------------------------------------------------------------
    template = json.dumps(b.request("latin1-prompt", prompt="PROMPT")).encode()
    b.add("latin1-prompt", "not-utf8", template.replace(b"PROMPT", b"caf\xe9"), client="kcat")
    b.add("cesu-surrogate", "not-utf8", template.replace(b"PROMPT", b"\xed\xa0\x80"), client="kcat")
    b.add("overlong-slash", "not-utf8", template.replace(b"PROMPT", b"\xc0\xaf"))
    b.add("random-binary", "not-utf8", bytes(range(256)) * 4, client="kcat")
    # Python's json.loads would detect UTF-16/32 by their byte patterns and read them; the
    # contract is UTF-8 (RFC 8259), so they are poison, with or without a BOM.
    for codec in ("utf-16", "utf-16-le", "utf-32-be"):
        name = f"{codec}-request"
        b.add(name, "utf16", json.dumps(b.request(name, provider="azure-sora")).encode(codec))
    b.add("not-utf8-job-submitted", "not-utf8", b"\xff\xfe\x00", suffix="job.submitted")
    b.add("not-utf8-timer", "not-utf8", b"\xff" * 64, suffix="timers.submitter")

    # --- invalid JSON -----------------------------------------------------------------------
    for name, raw in (
        ("truncated", b'{"request_id": "x", "prom'),
        ("trailing-comma", b'{"request_id": "x", "prompt": "p",}'),
        ("single-quotes", b"{'request_id': 'x', 'prompt': 'p'}"),
        ("plain-text", b"please make me a video of a cat"),
        ("two-objects", b'{"prompt": "a"}{"prompt": "b"}'),
        ("html", b"<html><body>502 Bad Gateway</body></html>"),
    ):
        b.add(name, "invalid-json", raw, client="kcat")
    b.add("invalid-json-due", "invalid-json", b"{", suffix="submitter.due")
    b.add("invalid-json-poller-due", "invalid-json", b"{nope", suffix="poller.due")
    b.add("invalid-json-job-failed", "invalid-json", b"]", suffix="job.failed")
    b.add("invalid-json-video-stored", "invalid-json", b"{{", suffix="video.stored")

    # --- JSON that is not an object ---------------------------------------------------------
    for name, raw in (
        ("json-array", b'[{"request_id": "x", "prompt": "p"}]'),
        ("json-string", b'"a video of a cat"'),
        ("json-number", b"42"),
        ("json-null", b"null"),
        ("json-true", b"true"),
    ):
        b.add(name, "not-an-object", raw, client="kcat")
    b.add("array-on-progressed", "not-an-object", b"[]", suffix="job.progressed")
    b.add("number-timer", "not-an-object", b"7", suffix="timers.poller.5s")

    # --- huge values near the broker's 1 MiB limit ------------------------------------------
    huge = b.request("huge-prompt", prompt="p" * 1_000_000)
    b.add(
        "huge-prompt", "oversized", json.dumps(huge).encode(), failed_request_id=rid("huge-prompt")
    )
    b.add("huge-binary", "oversized", b"\xfe" + b"\x00" * 1_000_000)  # base64 in the letter
    b.add("huge-escapes", "oversized", b"\x01" * 400_000)  # escapes to 2.4 MB in a letter
    huge = b.request("huge-metadata", metadata={"k": "v" * 900_000})
    b.add(
        "huge-metadata",
        "oversized",
        json.dumps(huge).encode(),
        failed_request_id=rid("huge-metadata"),
    )

    # --- wrong types and out-of-range numbers -----------------------------------------------
    b.bad_request("prompt-list", "wrong-type", prompt=["a", "b"])
    b.bad_request("prompt-number", "wrong-type", prompt=12)
    b.bad_request("id-number", "wrong-type", reported=False, request_id=12345)
    b.bad_request("id-null", "wrong-type", reported=False, request_id=None)
    b.bad_request("metadata-list", "wrong-type", metadata=["a"])
    b.bad_request("metadata-int-value", "wrong-type", metadata={"k": 1})
    b.bad_request("fallbacks-string", "wrong-type", fallbacks="placeholder")
    b.bad_request("fallbacks-unknown", "wrong-type", fallbacks=["sms"])
    b.bad_request("event-id-garbage", "wrong-type", event_id="not-a-uuid")
    b.bad_request("naive-occurred-at", "wrong-type", occurred_at="2024-01-01T00:00:00")
    b.bad_request("schema-version-2", "wrong-type", schema_version=2)
    b.bad_request("extra-field", "wrong-type", evil="rm -rf /")
    b.bad_request("size-zero", "out-of-range", size="0x0")
    b.bad_request("size-3d", "out-of-range", size="1280x720x3")
    b.bad_request("seconds-0", "out-of-range", seconds=0, client="kcat")
    b.bad_request("seconds-61", "out-of-range", seconds=61)
    b.bad_request("seconds-negative", "out-of-range", seconds=-5)
    b.bad_request("seconds-2-64", "out-of-range", seconds=2**64)
    b.bad_request("variants-5", "out-of-range", variants=5)
    b.bad_request("variants-fraction", "out-of-range", variants=1.5)
    b.bad_event(
        "progress-101",
        "out-of-range",
        "job.progressed",
        b.job_event(
            "progress-101", "JobProgressed", status="running", provider_status="x", progress=101
        ),
    )

    # --- number literals Python's json takes but the schema must not --------------------------
    base = json.dumps(b.request("nan-seconds"))[:-1]
    b.add(
        "nan-seconds",
        "nan-infinity",
        (base + ', "seconds": NaN}').encode(),
        failed_request_id=rid("nan-seconds"),
    )
    base = json.dumps(b.request("infinity-variants"))[:-1]
    b.add(
        "infinity-variants",
        "nan-infinity",
        (base + ', "variants": -Infinity}').encode(),
        client="kcat",
        failed_request_id=rid("infinity-variants"),
    )
    base = json.dumps(b.request("seconds-1e400"))[:-1]
    b.add(
        "seconds-1e400",
        "1e400",
        (base + ', "seconds": 1e400}').encode(),
        failed_request_id=rid("seconds-1e400"),
    )
    # A 5000-digit integer: json.loads raises ValueError (CPython's int digit limit), not a
    # JSONDecodeError, so the request cannot even be named.
    base = json.dumps(b.request("int-5000-digits"))[:-1]
    b.add("int-5000-digits", "huge-int", (base + ', "seconds": ' + "9" * 5000 + "}").encode())

    # --- unknown event types, and events of another type on a topic -------------------------
    b.bad_request("unknown-event-type", "unknown-event-type", event_type="GenerationCancelled")
    b.bad_event(
        "unknown-on-job-failed",
        "unknown-event-type",
        "job.failed",
        b.job_event(
            "unknown-on-job-failed", "JobExploded", stage="poll", reason_code="x", message="m"
        ),
    )
    b.bad_event(
        "submitted-on-requested",
        "wrong-topic",
        "generation.requested",
        b.job_event("submitted-on-requested", "JobSubmitted"),
    )
    b.bad_event(
        "request-on-submitted",
        "wrong-topic",
        "job.submitted",
        b.request("request-on-submitted", event_type="GenerationRequested"),
        client="kcat",
    )
    b.bad_event(
        "request-on-succeeded",
        "wrong-topic",
        "job.succeeded",
        b.request("request-on-succeeded", event_type="GenerationRequested"),
    )
    b.bad_event(
        "progressed-on-unavailable",
        "wrong-topic",
        "download.unavailable",
        b.job_event(
            "progressed-on-unavailable", "JobProgressed", status="running", provider_status="x"
        ),
    )
    b.bad_event(
        "request-on-poller-due",
        "wrong-topic",
        "poller.due",
        b.request("request-on-poller-due", event_type="GenerationRequested"),
    )
    b.bad_event(
        "request-as-timer",
        "wrong-topic",
        "timers.submitter.30s",
        b.request("request-as-timer"),
    )
    b.bad_event(
        "dead-letter-on-stored",
        "wrong-topic",
        "video.stored",
        {"event_type": "DeadLetter", "stage": "x", "reason": "y"},
    )

    # --- duplicate keys: the last one wins, and it is bad ------------------------------------
    b.add(
        "duplicate-id",
        "duplicate-keys",
        f'{{"request_id": "{rid("duplicate-id")}", "prompt": "p", "request_id": ".."}}'.encode(),
        client="kcat",
    )
    b.add(
        "duplicate-seconds",
        "duplicate-keys",
        (
            f'{{"request_id": "{rid("duplicate-seconds")}", "prompt": "p",'
            ' "seconds": 5, "seconds": 500}'
        ).encode(),
        failed_request_id=rid("duplicate-seconds"),
    )

    # --- a byte-order mark in front of an invalid request -----------------------------------
    b.add(
        "bom-bad-request",
        "bom",
        b"\xef\xbb\xbf" + json.dumps(b.request("bom-bad-request", seconds=0)).encode(),
        client="kcat",
        failed_request_id=rid("bom-bad-request"),
    )
    b.add("bom-only", "bom", b"\xef\xbb\xbf")

    # --- empty values, tombstones, null keys ------------------------------------------------
    b.add("empty-value", "empty", b"", client="kcat")
    b.add("tombstone", "tombstone", None)
    b.add("tombstone-kcat", "tombstone", None, client="kcat")
    b.add("tombstone-job-succeeded", "tombstone", None, suffix="job.succeeded")
    b.add("tombstone-timer", "tombstone", None, suffix="timers.submitter")
    # Keys: not UTF-8 (letters keep it escaped), and far longer than a letter keeps (4096).
    b.add("key-not-utf8", "bad-key", b'{"prompt": "k"}', key=b"\xff\xfe\x00key", client="python")
    b.add("key-100k", "bad-key", b'{"prompt": "long key"}', key=b"k" * 100_000)
    b.add("null-key-bad", "null-key", b'{"prompt": "no id"}', key=None, client="kcat")
    b.add("null-key-bad-2", "null-key", b"[null]", key=None)

    # --- bad headers: non-UTF-8, null values, a content type that lies ----------------------
    for name, headers in (
        ("header-not-utf8", (("trace", b"\xff\xfe\xfd"),)),
        ("header-null", (("trace", None),)),
        ("header-content-type-bytes", (("content-type", b"\xc3\x28"),)),
        ("header-many", tuple((f"h{i}", b"\x80" * 8) for i in range(50))),
    ):
        body = b.request(name, seconds=99)
        b.add(
            name,
            "bad-header",
            json.dumps(body).encode(),
            headers=headers,
            failed_request_id=rid(name),
        )
    b.add(
        "header-json-ct-not-json",
        "bad-header",
        b"not json at all",
        headers=(("content-type", b"application/json"),),
    )
    b.add(
        "header-text-ct-not-utf8",
        "bad-header",
        b"\xff not text",
        headers=(("content-type", b"text/plain"),),
    )
    b.add(
        "header-text-ct-request",
        "bad-header",
        json.dumps(b.request("header-text-ct-request")).encode(),
        headers=(("content-type", b"text/plain"),),
        client="kcat",
        failed_request_id=rid("header-text-ct-request"),
    )

    # --- input-image URLs the SSRF guard refuses: valid requests, JobFailed with a reason ----
    for name, url in (
        ("image-loopback", "https://127.0.0.1/cat.png"),
        ("image-metadata", "https://169.254.169.254/latest/meta-data/"),
        ("image-private-10", "https://10.0.0.5/cat.png"),
        ("image-private-192", "https://192.168.1.1/cat.png"),
        ("image-ipv6-loopback", "https://[::1]/cat.png"),
        ("image-ipv6-ula", "https://[fd00::1]/cat.png"),
        ("image-localhost", "https://localhost/cat.png"),
        ("image-zero", "https://0.0.0.0/cat.png"),
        ("image-mapped", "https://[::ffff:127.0.0.1]/cat.png"),
    ):
        body = b.request(name, input_image_url=url)
        b.add(
            name,
            "ssrf-url",
            json.dumps(body).encode(),
            end="job_failed",
            failed_request_id=rid(name),
            client="kcat" if name.endswith(("metadata", "localhost")) else "python",
        )
    # Schemes other than https never pass the schema.
    b.bad_request("image-http", "ssrf-url", input_image_url="http://169.254.169.254/")
    b.bad_request("image-file", "ssrf-url", input_image_url="file:///etc/passwd")
    b.bad_request("callback-gopher", "ssrf-url", callback_url="gopher://127.0.0.1:25/")
    # A callback written as a private address is refused with the request, before it is paid
    # for (a name that resolves to one is the notifier guard's to refuse when it sends).
    for name, url in (
        ("callback-loopback", "https://127.0.0.1/hook"),
        ("callback-metadata", "https://169.254.169.254/hook"),
        ("callback-localhost", "https://localhost/hook"),
        ("callback-mapped", "https://[::ffff:10.0.0.1]/hook"),
    ):
        body = b.request(name, callback_url=url)
        b.add(
            name,
            "ssrf-callback",
            json.dumps(body).encode(),
            end="job_failed",
            failed_request_id=rid(name),
        )

    # --- timers that are not timers ----------------------------------------------------------
    b.add(
        "timer-missing-fields",
        "bad-timer",
        json.dumps({"event_type": "Timer", "key": "k"}).encode(),
        suffix="timers.poller",
    )
    b.add(
        "timer-bad-due",
        "bad-timer",
        json.dumps(
            {
                "event_type": "Timer",
                "timer_id": "00000000-0000-0000-0000-000000000001",
                "due_at": "tomorrow",
                "target_topic": f"{prefix}poller.due",
                "key": "k",
                "payload": {},
            }
        ).encode(),
        suffix="timers.submitter",
        client="kcat",
    )
    # A timer naming a topic other than its stage's own `.due`: the relay refuses to fire it
    # (it would let whoever can write timers inject into any topic) and dead-letters it.
    b.add(
        "forged-timer-cross-topic",
        "forged-timer",
        json.dumps(
            {
                "event_type": "Timer",
                "timer_id": str(derive_event_id(rid("forged-timer-cross-topic"), "forged-timer")),
                "due_at": "2020-01-01T00:00:00Z",
                "target_topic": f"{prefix}job.failed",
                "key": rid("forged-timer-cross-topic"),
                "payload": {"request_id": rid("forged-timer-cross-topic")},
            }
        ).encode(),
        suffix="timers.poller",
    )
    # Valid timers with a hostile payload: the relay fires them into its stage's `.due` topic,
    # and that topic's readers dead-letter what arrives.
    for name, target, payload, reported in (
        ("forged-timer-dot-id", "submitter.due", {"request_id": "..", "prompt": "p"}, False),
        ("forged-timer-poll", "poller.due", {"request_id": rid("forged-timer-poll")}, True),
    ):
        timer_key = rid(name).encode()
        timer = {
            "event_type": "Timer",
            "timer_id": str(derive_event_id(rid(name), "forged-timer")),
            "due_at": "2020-01-01T00:00:00Z",  # long past: fired at once
            "target_topic": f"{prefix}{target}",
            "key": timer_key.decode(),
            "payload": payload,
        }
        # The relay's own encoding of what it fires (vidpipe.bus.timers.TimerRelay._fire).
        fired_value = json.dumps(payload, separators=(",", ":")).encode()
        b.add(
            name,
            "forged-timer",
            json.dumps(timer).encode(),
            suffix="timers.submitter" if target == "submitter.due" else "timers.poller",
            fired=(target, timer_key, fired_value),
            failed_request_id=rid(name) if reported else None,
        )
    return b.entries
