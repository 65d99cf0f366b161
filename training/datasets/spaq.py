"""SPAQ (Fang et al. 2020): 11,125 smartphone photos rated in the lab for quality (MOS 0-100)
and for five attributes, each also 0-100: Brightness, Colorfulness, Contrast, Noisiness,
Sharpness.

Label file: the official `MOS and Image attribute scores.xlsx` (read here with the standard
library, no openpyxl needed) or the same columns saved as CSV (`SPAQ_annotations.csv`, which
starts with a UTF-8 BOM). Images in `TestImage/` (the official folder) or `images/`.

MOS is already 0-100 and kept as is.

Attribute scores are "how good is the photo in this respect", higher = better, for all five:
in the label file each correlates positively with MOS (Spearman +0.85 to +0.95 over the 40
rows in ../shared/data/label-formats/spaq), so Noisiness is high for clean photos and low for
noisy ones (10241.jpg, a grainy night street, has Noisiness 35.8 and Brightness 28.5). They
become targets of the project's attribute vocabulary (blur, noise, underexposure,
overexposure, compression, color: the names the train loop, the synthetic distortions and the
verdict share) as defect severities in [0, 1] (0 none, 1 severe):

    severity = clip((defect_free_at - score) / defect_free_at, 0, 1)

with defect_free_at = 60 by default: 60 is the bottom of "good" on a five-level 0-100 scale, so
a photo rated good or better shows no defect, "poor" (30) is severity 0.5 (where iqs starts
naming a reason) and 0 is 1. defect_free_at=100 gives the plain 1 - score/100, which would call
every average photo half-defective. Mapping: Sharpness -> blur, Noisiness -> noise,
Brightness -> underexposure, and the worse of Colorfulness and Contrast -> color ("washed out
or cast": the synthetic distortions file contrast loss under color too). SPAQ's single
Brightness score cannot tell over- from underexposure; its low scores are dark shots, so it
feeds underexposure only and SPAQ gives no overexposure or compression target.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path, PurePosixPath

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

DATASET = "spaq"
LABEL_FILES = (
    "SPAQ_annotations.csv",
    "MOS and Image attribute scores.xlsx",
    "Annotations/MOS and Image attribute scores.xlsx",
)
IMAGE_FOLDERS = ("TestImage", "images")
# our attribute name -> the SPAQ columns it comes from (all higher = better; the worst counts)
ATTRIBUTE_COLUMNS = {
    "blur": ("Sharpness",),
    "noise": ("Noisiness",),
    "underexposure": ("Brightness",),
    "color": ("Colorfulness", "Contrast"),
}
SCORE_COLUMNS = ("Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness")
COLUMNS = {
    "image": ("Image name", "image_name", "image"),
    "mos": ("MOS",),
    **{column: (column,) for column in SCORE_COLUMNS},
}
DEFECT_FREE_AT = 60.0


def defect_severity(score: float, defect_free_at: float = DEFECT_FREE_AT) -> float:
    """SPAQ attribute score (0-100, higher = better) -> defect severity in [0, 1]."""
    return min(1.0, max(0.0, (defect_free_at - score) / defect_free_at))


def read_spaq(
    root: Path,
    labels: Path | str | None = None,
    *,
    images: Path | str | None = None,
    defect_free_at: float = DEFECT_FREE_AT,
    allow_missing: bool = False,
    strict: bool = True,
) -> list[Record]:
    """SPAQ records: MOS 0-100 as is; attributes blur, noise, underexposure, color."""
    if not 0.0 < float(defect_free_at) <= 100.0:
        raise DatasetError(f"{DATASET}: defect_free_at must be in (0, 100], got {defect_free_at}")
    source, folder = find_dataset_files(DATASET, root, labels, images, LABEL_FILES, IMAGE_FOLDERS)
    if source.suffix.lower() == ".xlsx":
        rows, unit = read_xlsx_rows(DATASET, source), "row"
    else:
        rows, unit = read_rows(DATASET, source), "line"
    columns, body = header_columns(DATASET, source, rows, COLUMNS, ("image", "mos"))
    problems = RowProblems(DATASET, source, unit)
    records: list[Record] = []
    for line, name, row in image_rows(body, columns["image"], problems):
        mos = parse_number(cell(row, columns["mos"]), "MOS", line, problems, 0.0, 100.0)
        if mos is None:
            continue
        scores: dict[str, float] = {}
        for column in SCORE_COLUMNS:
            if column not in columns:
                continue  # a label file without this column: no target from it
            value = parse_number(cell(row, columns[column]), column, line, problems, 0.0, 100.0)
            if value is None:
                break
            scores[column] = value
        else:
            attributes = {
                attribute: max(defect_severity(scores[c], float(defect_free_at)) for c in sources)
                for attribute, sources in ATTRIBUTE_COLUMNS.items()
                if all(c in scores for c in sources)
            }
            records.append(
                Record(path=folder / name, dataset=DATASET, mos=mos, raw_score=mos,
                       attributes=attributes)
            )
    problems.settle(strict)
    return drop_missing(DATASET, records, folder, source.name, allow_missing)


_MAIN = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_REL = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}"
_PKG_REL = "{http://schemas.openxmlformats.org/package/2006/relationships}"


def _column_number(reference: str) -> int:
    """'C7' -> 2 (zero-based column of a cell reference)."""
    letters = re.match(r"[A-Z]+", reference.upper())
    if not letters:
        raise ValueError(f"bad cell reference {reference!r}")
    number = 0
    for letter in letters.group(0):
        number = number * 26 + ord(letter) - ord("A") + 1
    return number - 1


def _first_sheet(archive: zipfile.ZipFile) -> str:
    try:
        workbook = ET.fromstring(archive.read("xl/workbook.xml"))
        rels = ET.fromstring(archive.read("xl/_rels/workbook.xml.rels"))
        sheet = workbook.find(f"{_MAIN}sheets/{_MAIN}sheet")
        rel_id = sheet.get(f"{_REL}id") if sheet is not None else None
        for rel in rels.iter(f"{_PKG_REL}Relationship"):
            if rel.get("Id") == rel_id:
                target = rel.get("Target", "")
                if target.startswith("/"):
                    return target.lstrip("/")
                return str(PurePosixPath("xl") / target)
    except KeyError:
        pass
    return "xl/worksheets/sheet1.xml"


def _shared_strings(archive: zipfile.ZipFile) -> list[str]:
    if "xl/sharedStrings.xml" not in archive.namelist():
        return []
    table = ET.fromstring(archive.read("xl/sharedStrings.xml"))
    strings = []
    for item in table.iter(f"{_MAIN}si"):
        plain = item.find(f"{_MAIN}t")
        if plain is not None:
            strings.append(plain.text or "")
        else:  # rich text: the runs' texts (phonetic hints in rPh are not part of the value)
            strings.append("".join(t.text or "" for t in item.findall(f"{_MAIN}r/{_MAIN}t")))
    return strings


def read_xlsx_rows(dataset: str, path: Path) -> list[tuple[int, list[str]]]:
    """Non-blank rows of the first sheet of an .xlsx workbook, with their row numbers."""
    try:
        with zipfile.ZipFile(path) as archive:
            strings = _shared_strings(archive)
            sheet = ET.fromstring(archive.read(_first_sheet(archive)))
            rows: list[tuple[int, list[str]]] = []
            for position, row in enumerate(sheet.iter(f"{_MAIN}row"), start=1):
                number = int(row.get("r", position))
                cells: dict[int, str] = {}
                for column, item in enumerate(row.findall(f"{_MAIN}c")):
                    if item.get("r"):
                        column = _column_number(item.get("r"))
                    kind = item.get("t")
                    value = item.find(f"{_MAIN}v")
                    if kind == "s" and value is not None:
                        text = strings[int(value.text)]
                    elif kind == "inlineStr":
                        text = "".join(t.text or "" for t in item.iter(f"{_MAIN}t"))
                    else:
                        text = value.text if value is not None and value.text else ""
                    cells[column] = text
                if any(text.strip() for text in cells.values()):
                    rows.append((number, [cells.get(i, "") for i in range(max(cells) + 1)]))
            return rows
    except (zipfile.BadZipFile, KeyError, ET.ParseError, ValueError, IndexError, OSError) as exc:
        raise DatasetError(
            f"{dataset}: cannot read {path} as an Excel workbook ({exc}); save its first sheet "
            "as CSV (UTF-8) and point \"labels\" at that file"
        ) from exc
