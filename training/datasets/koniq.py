"""KonIQ-10k (Hosu et al. 2020): 10,073 photos, each rated 1-5 by about 120 crowd workers.

Label file `koniq10k_scores_and_distributions.csv`: "image_name","c1".."c5","c_total","MOS",
"SD","MOS_zscore". Images in `1024x768/` (or the `512x384/` release).

Normalization (default score="mos"): 0-100 = (MOS - 1) / 4 * 100. MOS is the plain mean of
the 1-5 absolute-category ratings (1 bad .. 5 excellent), so the mapping keeps the verbal
anchors (bad = 0, fair = 50, excellent = 100) that LIVE Challenge's 0-100 slider and SPAQ's
share; MOS_zscore is standardized per rater and then stretched over the range of KonIQ's own
images, so its 0 and 100 mean "KonIQ's worst/best", not "bad/excellent", and it would not line
up with the other datasets. score="mos_zscore" takes MOS_zscore (already ~0-100) as is.
"""

from __future__ import annotations

from pathlib import Path

from .base import DatasetError, Record
from .csvfile import (
    RowProblems,
    cell,
    drop_missing,
    find_dataset_files,
    header_columns,
    image_rows,
    parse_number,
    read_rows,
)

DATASET = "koniq10k"
LABEL_FILES = ("koniq10k_scores_and_distributions.csv", "koniq10k_distributions_sets.csv")
IMAGE_FOLDERS = ("1024x768", "512x384", "images")
COLUMNS = {"image": ("image_name",), "mos": ("MOS",), "mos_zscore": ("MOS_zscore",)}


def read_koniq10k(
    root: Path,
    labels: Path | str | None = None,
    *,
    images: Path | str | None = None,
    score: str = "mos",
    allow_missing: bool = False,
    strict: bool = True,
) -> list[Record]:
    """KonIQ-10k records; MOS 1-5 -> 0-100 linearly (or MOS_zscore as is, score="mos_zscore")."""
    if score not in ("mos", "mos_zscore"):
        raise DatasetError(f"{DATASET}: score must be 'mos' or 'mos_zscore', got {score!r}")
    source, folder = find_dataset_files(DATASET, root, labels, images, LABEL_FILES, IMAGE_FOLDERS)
    columns, body = header_columns(
        DATASET, source, read_rows(DATASET, source), COLUMNS, ("image", score)
    )
    problems = RowProblems(DATASET, source)
    records: list[Record] = []
    for line, name, row in image_rows(body, columns["image"], problems, "no image_name"):
        if score == "mos":
            raw = parse_number(cell(row, columns["mos"]), "MOS", line, problems, 1.0, 5.0)
            mos = None if raw is None else (raw - 1.0) / 4.0 * 100.0
        else:
            raw = parse_number(
                cell(row, columns["mos_zscore"]), "MOS_zscore", line, problems, 0.0, 100.0
            )
            mos = raw
        if raw is None:
            continue
        records.append(Record(path=folder / name, dataset=DATASET, mos=mos, raw_score=raw))
    problems.settle(strict)
    return drop_missing(DATASET, records, folder, source.name, allow_missing)
