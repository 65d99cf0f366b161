"""EVA (Kang et al. 2020): 4,070 AVA photos re-rated 0-10 by about 30 vetted raters each.

Label file `votes_filtered.csv`, delimiter `=`, header
`image_id=user_id=score=difficulty=visual=composition=quality=semantic=vote_time=1=2=3=4`, one
row per vote; only image_id (an AVA id, without .jpg) and score (0-10) are used. The release
ships its images in nested folders (by category, or all together), so the image folder is
searched recursively for `<image_id>.<jpg|jpeg|png>`.

Votes are aggregated per image: raw_score = mean score (0-10); 0-100 = mean * 10. EVA rates
aesthetics, and its photos are AVA photos: combined.json keeps it out of the MOS head and gives
it AVA's split ("split_with": "ava") so one picture never sits in train and test at once.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from .base import Record
from .csvfile import (
    DatasetWarning,
    RowProblems,
    cell,
    check_min_votes,
    drop_missing,
    find_dataset_files,
    header_columns,
    image_rows,
    parse_number,
    read_rows,
)

DATASET = "eva"
LABEL_FILES = ("votes_filtered.csv", "data/votes_filtered.csv")
IMAGE_FOLDERS = ("images",)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
COLUMNS = {"image": ("image_id",), "score": ("score",)}


def _index_images(folder: Path) -> dict[str, Path]:
    """image id (file stem) -> path, over every image file below `folder` (first by sorted path)."""
    index: dict[str, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.stem not in index and path.is_file():
            index[path.stem] = path
    return index


def read_eva(
    root: Path,
    labels: Path | str | None = None,
    *,
    images: Path | str | None = None,
    min_votes: int = 1,
    allow_missing: bool = False,
    strict: bool = True,
) -> list[Record]:
    """EVA records, one per image: raw_score = mean vote (0-10), mos = mean * 10."""
    check_min_votes(DATASET, min_votes)
    source, folder = find_dataset_files(DATASET, root, labels, images, LABEL_FILES, IMAGE_FOLDERS)
    columns, body = header_columns(
        DATASET, source, read_rows(DATASET, source, delimiter="="), COLUMNS, ("image", "score")
    )
    problems = RowProblems(DATASET, source)
    votes: dict[str, list[float]] = {}
    # one row per vote: an image is listed once per rater
    for line, image_id, row in image_rows(
        body, columns["image"], problems, "no image_id", unique=False
    ):
        score = parse_number(cell(row, columns["score"]), "score", line, problems, 0.0, 10.0)
        if score is not None:
            votes.setdefault(image_id, []).append(score)
    problems.settle(strict)

    index = _index_images(folder)
    records = []
    too_few = [image_id for image_id, scores in votes.items() if len(scores) < int(min_votes)]
    if too_few:
        warnings.warn(
            f"{DATASET}: left out {len(too_few)} images with fewer than {min_votes} votes "
            f"(first: {', '.join(too_few[:5])})",
            DatasetWarning,
            stacklevel=2,
        )
    for image_id, scores in votes.items():
        if len(scores) < int(min_votes):
            continue
        mean = sum(scores) / len(scores)
        path = index.get(image_id, folder / f"{image_id}.jpg")
        records.append(Record(path=path, dataset=DATASET, mos=mean * 10.0, raw_score=mean))
    found = set(index.values())
    return drop_missing(
        DATASET, records, folder, source.name, allow_missing, exists=lambda path: path in found
    )
