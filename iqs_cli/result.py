"""One scored shot: what every output format, the cache, XMP writing and culling share."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class ShotResult:
    path: str  # the file that was decoded and scored (absolute)
    files: list[str] = field(default_factory=list)  # every file of the shot (RAW + JPEG siblings)
    label: str | None = None  # rejected | pending | accepted; None when the shot failed
    probabilities: dict[str, float] = field(default_factory=dict)
    mos: float | None = None  # 0-100, 100 best
    stars: int | None = None  # 1-5; rejected shots are rated -1 in XMP, stars stay informative
    reasons: list[str] = field(default_factory=list)
    attributes: dict[str, float] = field(default_factory=dict)
    model: str | None = None
    model_version: str | None = None
    error: str | None = None
    # Bursts (iqs_cli/bursts.py): the group's number in this run (None: not in a group), this
    # frame's rank in it (1 = best) and the best frame's path.
    group: int | None = None
    group_rank: int | None = None
    group_best: str | None = None
    cached: bool = False
    # What grouping reads (iqs_cli/capture.py), not output: capture time (seconds, camera
    # clock), which clock gave it ("exif" or "file") and the 96-byte look of the frame as hex.
    taken: float | None = None
    clock: str | None = None
    descriptor: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        data = asdict(self)
        for internal in ("cached", "taken", "clock", "descriptor"):
            data.pop(internal)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "ShotResult":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)
