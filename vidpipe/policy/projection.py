"""The projection: which column each event moves on a request's row in the `projects` table.

`project()` is a pure function (current row, event) -> changes, so replaying the event log
rebuilds the table, and redelivered or out-of-order events never move a status backwards: each
status has a rank and an update only applies when it does not lower it. `project_parent()` is the
same for the row of a failover child's parent. The SQL that applies the changes is
`vidpipe.db.records`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from schemas.events import (
    DownloadGaveUp,
    DownloadRetryScheduled,
    DownloadUnavailable,
    Event,
    GenerationRequested,
    JobCancelled,
    JobFailed,
    JobProgressed,
    JobSubmitted,
    JobSucceeded,
    UserNotified,
    VideoStored,
)

__all__ = ["STATUS_RANK", "TERMINAL_STATUSES", "project", "project_parent"]

# Higher ranks win, so a redelivered or replayed event never moves a request backwards. The
# fallback states sit between "the provider is done" and "the video is stored".
STATUS_RANK: dict[str, int] = {
    "requested": 0,
    "submitted": 1,
    "queued": 2,
    "running": 3,
    "generated": 4,
    "download_unavailable": 5,
    "retrying": 6,
    "placeholder": 7,
    "expired": 8,
    "gave_up": 8,
    "failed_over": 9,
    "stored": 10,
    "failed": 10,
    "cancelled": 10,
}
TERMINAL_STATUSES = frozenset({"stored", "failed", "expired", "gave_up", "cancelled"})
_FINAL = frozenset({"stored", "failed", "cancelled"})


def _rank(status: str | None) -> int:
    return STATUS_RANK.get(status or "requested", 0)


def project(current: dict[str, Any], event: Event) -> dict[str, Any]:
    """The column changes `event` makes to its own request's row (`current`)."""
    changes: dict[str, Any] = {}

    def advance(status: str) -> None:
        if current.get("status") not in _FINAL and _rank(status) >= _rank(current.get("status")):
            changes["status"] = status

    def fill(column: str, value: Any) -> None:
        if value is not None and current.get(column) is None:
            changes[column] = value

    match event:
        case GenerationRequested():
            for column, value in (
                ("prompt", event.prompt),
                ("input_image_url", str(event.input_image_url) if event.input_image_url else None),
                ("provider", event.provider),
                ("model", event.model),
                ("parent_request_id", event.parent_request_id),
                ("metadata", dict(event.metadata) or None),
            ):
                fill(column, value)
            if current.get("status") is None:
                changes["status"] = "requested"
            if event.failover_path and event.provider:
                fill("failover_path", _path(event))
        case JobSubmitted():
            advance("submitted")
            changes["provider"] = event.provider
            fill("model", event.model)
            changes["sora_job_id"] = event.provider_job_id
            changes["azure_endpoint"] = event.endpoint_host
            fill("expires_at", event.expires_at)
            fill("estimated_cost_usd", event.cost_usd)
            fill("price_version", event.price_version)
        case JobProgressed():
            before = _rank(current.get("status"))
            advance(event.status)
            if event.progress is not None and (
                "status" in changes or _rank(event.status) == before
            ):
                changes["progress"] = max(event.progress, current.get("progress") or 0)
            fill("sora_job_id", event.provider_job_id)
        case JobSucceeded():
            advance("generated")
            changes["progress"] = 100
            changes["sora_generation_id"] = event.generation_ids[0]
            fill("sora_job_id", event.provider_job_id)
            if event.expires_at is not None:
                changes["expires_at"] = event.expires_at
            # The final cost (docs/costs.md): the event's, else the estimate at submission.
            reported = event.cost_usd
            fill("cost_usd", current.get("estimated_cost_usd") if reported is None else reported)
            fill("price_version", event.price_version)
        case JobCancelled():
            # Whoever took the ledger's claim first won: a cancelled request has no video, and
            # a cancel that came too late is never announced, so this only guards a replay.
            if current.get("status") != "stored":
                changes["status"] = "cancelled"
                changes["error_message"] = f"cancelled: {event.message}"
                changes["next_retry_at"] = None
                fill("sora_job_id", event.provider_job_id)
        case JobFailed():
            # A create that failed after its request was cancelled does not undo the cancel.
            if current.get("status") not in ("stored", "cancelled"):
                changes["status"] = "failed"
                changes["error_message"] = f"{event.reason_code}: {event.message}"
            fill("cost_usd", event.cost_usd)
            fill("price_version", event.price_version)
        case DownloadUnavailable():
            advance("download_unavailable")
            _later(changes, current, "attempted_download_at", event.attempted_at)
            fill("sora_generation_id", event.generation_id)
            fill("expires_at", event.expires_at)
            if current.get("status") != "stored":
                changes["error_message"] = (
                    f"Video generated (job: {event.provider_job_id}, gen: {event.generation_id})"
                    f" but not downloadable: {event.reason_code}: {event.message}"
                )
        case DownloadRetryScheduled():
            advance("retrying")
            if event.attempt >= (current.get("retry_attempts") or 0):
                changes["retry_attempts"] = event.attempt
                changes["next_retry_at"] = event.next_attempt_at
            if event.attempted_at is not None:
                _later(changes, current, "attempted_download_at", event.attempted_at)
        case DownloadGaveUp():
            advance("expired" if event.reason_code == "expired" else "gave_up")
            changes["next_retry_at"] = None
            if current.get("status") not in _FINAL:
                changes["error_message"] = f"{event.reason_code}: {event.message}"
        case UserNotified():
            if event.channel == "record":
                changes["user_message"] = event.message
        case VideoStored():
            if event.variant_index == 0:
                if event.placeholder:
                    # A placeholder never replaces a real video, and still shows on a row that
                    # got past `placeholder` first (`gave_up`, `expired`, `failed_over`).
                    if current.get("status") not in _FINAL:
                        changes.update(_video_columns(event))
                        if _rank("placeholder") >= _rank(current.get("status")):
                            changes["status"] = "placeholder"
                elif current.get("status") != "cancelled":
                    changes.update(_video_columns(event), status="stored", next_retry_at=None)
                    changes["error_message"] = None
                fill("sora_generation_id", event.generation_id)
                fill("sora_job_id", event.provider_job_id)
    return {k: v for k, v in changes.items() if current.get(k) != v}


def _cancelled_with_child(
    changes: dict[str, Any], parent: dict[str, Any], message: str | None
) -> None:
    """The lineage's latest child was cancelled: the request that was asked for ends so too
    (a cancel of the parent is sent to its child: vidpipe.policy.cancel.lineage_cancels)."""
    if parent.get("status") not in _FINAL:
        changes.update(status="cancelled", next_retry_at=None, error_message=message)


def project_parent(
    parent: dict[str, Any], child_row: dict[str, Any], event: Event
) -> dict[str, Any]:
    """The changes a failover child's event makes to its parent's row."""
    changes: dict[str, Any] = {}
    if isinstance(event, GenerationRequested) and _child_video_first(parent, child_row):
        # The child's video (on video.stored) was recorded before its request (on
        # generation.requested): the topics are not ordered, so link the video now.
        changes.update(
            {column: child_row.get(column) for column in _VIDEO_COLUMNS},
            status="stored",
            next_retry_at=None,
            failover_request_id=child_row["request_id"],
        )
        _longer_path(changes, parent, event)
    elif isinstance(event, GenerationRequested):
        # Linked even when the parent got its own video first (a retry racing the failover).
        changes["failover_request_id"] = child_row["request_id"]
        _longer_path(changes, parent, event)
        if child_row.get("status") == "cancelled":
            # The child's cancel was recorded before its request (the topics are not ordered).
            _cancelled_with_child(changes, parent, child_row.get("error_message"))
        elif parent.get("status") not in _FINAL and _rank("failed_over") >= _rank(
            parent.get("status")
        ):
            changes["status"] = "failed_over"
    elif (
        isinstance(event, JobCancelled)
        and parent.get("failover_request_id") == child_row["request_id"]
    ):
        _cancelled_with_child(changes, parent, f"cancelled: {event.message}")
    elif (
        isinstance(event, VideoStored)
        and not event.placeholder
        and event.variant_index == 0
        and (parent.get("status") != "stored" or parent.get("placeholder"))
    ):
        # The parent's record links to the child's video: a UI reading the parent shows it.
        changes.update(_video_columns(event), status="stored", next_retry_at=None)
        changes["failover_request_id"] = child_row["request_id"]
    return {k: v for k, v in changes.items() if parent.get(k) != v}


def _path(event: GenerationRequested) -> str:
    """The providers a failover child's lineage went through, its own last."""
    return ",".join([*event.failover_path, event.provider or "?"])


def _longer_path(
    changes: dict[str, Any], parent: dict[str, Any], event: GenerationRequested
) -> None:
    # A lineage's path only grows: a replayed or late earlier child never shortens it.
    if not event.failover_path or not event.provider:
        return
    path = _path(event)
    if len(path.split(",")) > len((parent.get("failover_path") or "").split(",")):
        changes["failover_path"] = path


_VIDEO_COLUMNS = ("output_image_url", "placeholder", "video_size_bytes", "video_sha256", "progress")


def _child_video_first(parent: dict[str, Any], child_row: dict[str, Any]) -> bool:
    child_has_video = (
        child_row.get("status") == "stored"
        and not child_row.get("placeholder")
        and child_row.get("output_image_url") is not None
    )
    return child_has_video and (parent.get("status") != "stored" or bool(parent.get("placeholder")))


def _video_columns(event: VideoStored) -> dict[str, Any]:
    return {
        "output_image_url": event.storage_url,
        "placeholder": event.placeholder,
        "video_size_bytes": event.size_bytes,
        "video_sha256": event.sha256,
        "progress": 100,
    }


def _later(changes: dict[str, Any], current: dict[str, Any], column: str, value: datetime) -> None:
    known = current.get(column)
    if known is not None and known.tzinfo is None:
        known = known.replace(tzinfo=UTC)
    if known is None or value > known:
        changes[column] = value
