"""Plain data the binding hands out: progress events, results, status."""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence, Tuple, Union

from typing import TypedDict


class ProgressKind(enum.IntEnum):
    """What a progress event reports (vic_progress_kind)."""

    PULLING_FROM = 0
    PULLING_FS_LAYER = 1
    WAITING = 2
    DOWNLOADING = 3
    VERIFYING_CHECKSUM = 4
    DOWNLOAD_COMPLETE = 5
    PULL_COMPLETE = 6
    ALREADY_EXISTS = 7
    RETRYING = 8
    DIGEST = 9
    STATUS = 10


class State(enum.IntEnum):
    """Where a pull stands (vic_pull_state)."""

    PENDING = 0
    DONE = 1
    FAILED = 2
    CANCELLED = 3


@dataclass(frozen=True)
class Progress:
    """One progress event, copied out of the library."""

    layer: Optional[str]
    """The layer digest, or None for image-level messages."""
    kind: ProgressKind
    current: int
    """Bytes so far for DOWNLOADING; the attempt number for RETRYING."""
    total: int
    """The layer size for DOWNLOADING and PULLING_FS_LAYER, else 0."""
    message: str
    """Docker's wording, e.g. "Pull complete"."""


@dataclass(frozen=True)
class Status:
    """A snapshot of a pull (vic_pull_status)."""

    state: State
    result: int
    layers_total: int
    layers_done: int
    bytes_total: int
    bytes_done: int

    @property
    def finished(self) -> bool:
        return self.state != State.PENDING


@dataclass(frozen=True)
class Layer:
    digest: str
    diff_id: Optional[str]
    size: int
    media_type: str


@dataclass(frozen=True)
class LayerCommit:
    """A verified layer offered to ``on_commit`` before it is committed."""

    index: int
    """Position in the manifest; a digest listed twice is offered twice."""
    digest: str
    diff_id: Optional[str]
    """The uncompressed tar's digest; None when verify_diff_ids is off."""
    media_type: str
    size: int
    path: str
    """The verified blob's file in the store: read it, do not move it."""


@dataclass(frozen=True)
class Result:
    """What a successful pull returns (the library's result JSON)."""

    reference: str
    digest: str
    """What the reference resolved to (the index digest if multi-platform)."""
    manifest_digest: str
    manifest_media_type: str
    stored_manifest_digest: str
    """The manifest index.json points at (OCI form of a Docker manifest)."""
    config_digest: str
    platform: Optional[str]
    store: str
    layers: Tuple[Layer, ...]
    bytes_downloaded: int
    up_to_date: bool
    json: str = field(repr=False, compare=False)
    """The result JSON exactly as the library produced it."""

    @classmethod
    def from_json(cls, text: str) -> "Result":
        d: Dict[str, Any] = json.loads(text)
        layers = tuple(
            Layer(l["digest"], l.get("diff_id"), l["size"], l["media_type"])
            for l in d["layers"]
        )
        return cls(
            reference=d["reference"],
            digest=d["digest"],
            manifest_digest=d["manifest_digest"],
            manifest_media_type=d["manifest_media_type"],
            stored_manifest_digest=d["stored_manifest_digest"],
            config_digest=d["config_digest"],
            platform=d.get("platform"),
            store=d["store"],
            layers=layers,
            bytes_downloaded=d["bytes_downloaded"],
            up_to_date=d["up_to_date"],
            json=text,
        )


class PullOptions(TypedDict, total=False):
    """Keyword options of pull() and Pull(); None means the default."""

    platform: Optional[str]
    """"os/arch[/variant]"; default the host."""
    plain_http: Union[bool, Sequence[str]]
    """True for every registry, or a list of "host:port"."""
    username: Optional[str]
    password: Optional[str]
    token: Optional[str]
    max_concurrent_downloads: Optional[int]
    """1 to 64 (default 3)."""
    max_attempts: Optional[int]
    """1 to 100 (default 5)."""
    verify_diff_ids: Optional[bool]
    """Check each layer's diffID (default True)."""
    priority: Optional[int]
    """Download slots go to higher priorities first (default 0)."""
    low_speed_limit: Optional[int]
    """Bytes/s under which a connection counts as stalled (default 1024)."""
    low_speed_time_secs: Optional[int]
    """How long a stall lasts before the connection is replaced (default 30)."""
    partial_max_age_secs: Optional[int]
    """Age limit of kept partial downloads (default 7 days)."""
    partial_max_bytes: Optional[int]
    """Size limit of kept partial downloads (default 8 GiB)."""
