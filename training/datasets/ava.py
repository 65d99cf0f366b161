"""AVA (Murray et al. 2012): 255,530 photos from DPChallenge, each with a histogram of votes
for scores 1..10 (about 210 votes per photo).

Label file `AVA.txt`, space separated, no header:
`index image_id n1 .. n10 semantic_tag1 semantic_tag2 challenge_id`. Images `images/<id>.jpg`.

The score is the mean of the vote histogram (1-10), kept as raw_score; 0-100 = (mean - 1) / 9
* 100. AVA rates aesthetics, not technical quality: combined.json uses it for class labels and
keeps it out of the MOS head ("use_mos": false).
"""

from __future__ import annotations

from pathlib import Path

from .base import Record
from .csvfile import (
    FirstListing,
    RowProblems,
    check_min_votes,
    drop_missing,
    find_dataset_files,
    read_text,
)

DATASET = "ava"
LABEL_FILES = ("AVA.txt", "AVA_dataset/AVA.txt")
IMAGE_FOLDERS = ("images", "AVA_dataset/images")


def read_ava(
    root: Path,
    labels: Path | str | None = None,
    *,
    images: Path | str | None = None,
    min_votes: int = 1,
    allow_missing: bool = False,
    strict: bool = True,
) -> list[Record]:
    """AVA records: raw_score = mean vote (1-10), mos = (mean - 1) / 9 * 100."""
    check_min_votes(DATASET, min_votes)
    source, folder = find_dataset_files(DATASET, root, labels, images, LABEL_FILES, IMAGE_FOLDERS)
    problems = RowProblems(DATASET, source)
    records: list[Record] = []
    listed = FirstListing(problems)
    for line, text in enumerate(read_text(DATASET, source).splitlines(), start=1):
        fields = text.split()
        if not fields:
            continue
        if len(fields) < 12:
            problems.add(
                line, f"expected index, image id and 10 vote counts, got {len(fields)} fields"
            )
            continue
        image_id = fields[1]
        try:
            counts = [int(field) for field in fields[2:12]]
        except ValueError:
            problems.add(line, f"vote counts {' '.join(fields[2:12])!r} are not all whole numbers")
            continue
        if any(count < 0 for count in counts):
            problems.add(line, "a vote count is negative")
            continue
        if listed.repeated(line, image_id):
            continue
        total = sum(counts)
        if total < int(min_votes):
            problems.add(line, f"image {image_id}: {total} votes, fewer than {min_votes}")
            continue
        mean = sum(score * count for score, count in zip(range(1, 11), counts)) / total
        records.append(
            Record(path=folder / f"{image_id}.jpg", dataset=DATASET,
                   mos=(mean - 1.0) / 9.0 * 100.0, raw_score=mean)
        )
    problems.settle(strict)
    return drop_missing(DATASET, records, folder, source.name, allow_missing)
