"""LIVE In the Wild Image Quality Challenge (CLIVE, Ghadiyaram & Bovik 2016): 1,162 authentic
mobile photos, each rated on a 0-100 slider by about 175 people.

Two layouts:
- `labels.csv` (`image,mos,mos_std`) with `images/`, as in ../shared/data/clive;
- the official release: `Data/AllImages_release.mat` (names), `Data/AllMOS_release.mat`
  (MOS), with `Images/`. The release lists its 7 practice images first (they live in
  `Images/trainingImages/` and served to train the raters); they are left out unless
  include_training_images=True, as every published split does.

MOS is already 0-100 and kept as is.
"""

from __future__ import annotations

from pathlib import Path

from .base import DatasetError, Record
from .csvfile import (
    FileIndex,
    RowProblems,
    cell,
    drop_missing,
    find_dataset_files,
    header_columns,
    image_rows,
    parse_number,
    read_rows,
)

DATASET = "clive"
LABEL_FILES = ("labels.csv", "Data/AllMOS_release.mat")
IMAGE_FOLDERS = ("images", "Images")
COLUMNS = {"image": ("image", "image_name", "path"), "mos": ("mos", "MOS")}
RELEASE_SIZE = 1169  # 7 practice images + 1,162 rated test images
PRACTICE_IMAGES = 7


def read_clive(
    root: Path,
    labels: Path | str | None = None,
    *,
    images: Path | str | None = None,
    include_training_images: bool = False,
    allow_missing: bool = False,
    strict: bool = True,
) -> list[Record]:
    """CLIVE records from labels.csv or the official .mat files; MOS 0-100 as is."""
    source, folder = find_dataset_files(DATASET, root, labels, images, LABEL_FILES, IMAGE_FOLDERS)
    if source.suffix.lower() == ".mat":
        records = _read_release(source, folder, include_training_images, strict)
        # Practice images sit in Images/trainingImages/; images that were BMP may have been
        # converted to JPEG (as in ../shared/data/clive): accept the same stem as .jpg.
        index = FileIndex()
        for record in records:
            if not index.exists(record.path):
                for alternative in (
                    folder / "trainingImages" / record.path.name,
                    record.path.with_suffix(".jpg"),
                ):
                    if index.exists(alternative):
                        record.path = alternative
                        break
        return drop_missing(DATASET, records, folder, source.name, allow_missing, index.exists)

    columns, body = header_columns(
        DATASET, source, read_rows(DATASET, source), COLUMNS, ("image", "mos")
    )
    problems = RowProblems(DATASET, source)
    records = []
    for line, name, row in image_rows(body, columns["image"], problems):
        mos = parse_number(cell(row, columns["mos"]), "MOS", line, problems, 0.0, 100.0)
        if mos is not None:
            records.append(Record(path=folder / name, dataset=DATASET, mos=mos, raw_score=mos))
    problems.settle(strict)
    return drop_missing(DATASET, records, folder, source.name, allow_missing)


def _strings(value) -> list[str]:
    """The strings inside a MATLAB cell array as scipy.io.loadmat returns it (nested arrays)."""
    import numpy as np

    if isinstance(value, str):
        return [value]
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "US":
            return [str(item) for item in value.ravel()]
        return [text for item in value.ravel() for text in _strings(item)]
    return [str(value)]


def _load_mat(path: Path, key: str):
    try:
        from scipy.io import loadmat
    except ImportError as exc:  # scipy comes with the `train` extra
        raise DatasetError(
            f"{DATASET}: reading {path.name} needs scipy (pip install 'iqs[train]'), or use "
            "labels.csv (image,mos) instead"
        ) from exc
    try:
        data = loadmat(str(path))
    except FileNotFoundError as exc:
        raise DatasetError(f"{DATASET}: {path} not found; the release keeps it in Data/") from exc
    except Exception as exc:  # scipy raises several types for a damaged file
        raise DatasetError(f"{DATASET}: cannot read {path} as a MATLAB file ({exc})") from exc
    if key not in data:
        names = ", ".join(name for name in data if not name.startswith("__"))
        raise DatasetError(f"{DATASET}: {path.name} has no variable {key!r} (it has {names})")
    return data[key]


def _read_release(
    mos_file: Path, folder: Path, include_training_images: bool, strict: bool
) -> list[Record]:
    import numpy as np

    data_dir = mos_file.parent
    names = _strings(_load_mat(data_dir / "AllImages_release.mat", "AllImages_release"))
    scores = np.asarray(_load_mat(data_dir / "AllMOS_release.mat", "AllMOS_release"))
    try:
        scores = scores.astype(float).ravel()
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{DATASET}: AllMOS_release.mat does not hold numbers ({exc})") from exc
    if len(names) != len(scores):
        raise DatasetError(
            f"{DATASET}: AllImages_release.mat lists {len(names)} images but "
            f"AllMOS_release.mat has {len(scores)} scores; the two files are from different "
            "releases"
        )
    start = 0
    if len(names) == RELEASE_SIZE and not include_training_images:
        start = PRACTICE_IMAGES
    problems = RowProblems(DATASET, data_dir / "AllMOS_release.mat", unit="entry")
    records = []
    for position in range(start, len(names)):
        mos = parse_number(repr(float(scores[position])), "MOS", position + 1, problems, 0.0, 100.0)
        if mos is not None:
            records.append(
                Record(path=folder / names[position], dataset=DATASET, mos=mos, raw_score=mos)
            )
    problems.settle(strict)
    return records
