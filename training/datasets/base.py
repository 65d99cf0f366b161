"""What every dataset reader produces: one Record per labelled image.

Readers only parse label files and check that images exist; loading pixels is the job of
`training.data` (which uses the command's own decoder, so training sees what `iqs score` sees).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path



class DatasetError(Exception):
    """A dataset on disk does not match what its reader expects (message says what to do)."""


class DataWarning(UserWarning):
    """The data can train only a weaker model than it seems to: too few labelled photos, or a
    head without labels (the message gives the numbers and what to do)."""


@dataclass
class Record:
    path: Path  # absolute path of the image
    dataset: str  # e.g. "koniq10k", "spaq", "ava", "eva", "clive", "csv"
    mos: float | None = None  # normalized to 0-100 (100 best); None when the dataset has none
    label: int | None = None  # 0 rejected, 1 pending, 2 accepted; None = no class target
    attributes: dict[str, float] = field(default_factory=dict)  # defect severities in [0, 1]
    raw_score: float | None = None  # the score as the dataset states it (before normalization)
    split: str = "train"  # "train" | "val" | "test"
    weight: float = 1.0  # sampling weight
