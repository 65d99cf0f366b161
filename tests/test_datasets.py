"""Dataset readers on the real label layouts (../shared/data/label-formats, ../shared/data/clive)
and on small broken copies made here."""

from __future__ import annotations

import csv
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from iqs_training.datasets.ava import read_ava
from iqs_training.datasets.base import DatasetError
from iqs_training.datasets.clive import read_clive
from iqs_training.datasets.csvfile import DatasetWarning, read_csv
from iqs_training.datasets.eva import read_eva
from iqs_training.datasets.koniq import read_koniq10k
from iqs_training.datasets.registry import READERS, read_dataset
from iqs_training.datasets.spaq import defect_severity, read_spaq


def touch(path: Path) -> Path:
    """Readers only check that images exist; an empty file stands in for one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


@pytest.fixture
def formats(shared_data) -> Path:
    return shared_data / "label-formats"


# ---------------------------------------------------------------------------- KonIQ-10k


def test_koniq_excerpt_normalizes_mos_and_reports_missing_images(formats):
    with pytest.warns(DatasetWarning, match="37 of 40 images"):
        records = read_koniq10k(formats / "koniq10k", allow_missing=True)
    assert sorted(r.path.name for r in records) == [
        "10004473376.jpg", "10007903636.jpg", "10009096245.jpg"
    ]
    first = next(r for r in records if r.path.name == "10004473376.jpg")
    assert first.path.is_absolute() and first.path.is_file()
    assert first.dataset == "koniq10k"
    assert first.raw_score == pytest.approx(3.82857142857143)
    assert first.mos == pytest.approx((3.82857142857143 - 1) / 4 * 100)
    assert first.label is None and first.attributes == {}


def test_koniq_missing_images_is_one_clear_error(formats):
    with pytest.raises(DatasetError) as info:
        read_koniq10k(formats / "koniq10k")
    message = str(info.value)
    assert "37 of 40 images" in message
    assert "koniq10k_scores_and_distributions.csv" in message
    assert "(first: 10007357496.jpg, 100117038.jpg" in message
    assert "--data-root" in message and "allow_missing" in message


def test_koniq_zscore_option(formats):
    with pytest.warns(DatasetWarning):
        records = read_koniq10k(formats / "koniq10k", score="mos_zscore", allow_missing=True)
    first = next(r for r in records if r.path.name == "10004473376.jpg")
    assert first.mos == pytest.approx(77.3836206896552)


def test_koniq_bad_rows_are_listed_with_line_numbers(tmp_path):
    root = tmp_path / "koniq10k"
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        touch(root / "1024x768" / name)
    (root / "koniq10k_scores_and_distributions.csv").write_text(
        '"image_name","MOS","SD","MOS_zscore"\n'
        '"a.jpg",3.0,0.5,50\n'
        '"b.jpg",abc,0.5,50\n'
        '\n'
        '"c.jpg",7.5,0.5,50\n'
        '"a.jpg",2.0,0.5,40\n'
        '"d.jpg",5.0,0.5,99\n'
    )
    with pytest.raises(DatasetError) as info:
        read_koniq10k(root)
    message = str(info.value)
    assert "3 bad rows" in message
    assert "line 3: MOS 'abc' is not a number" in message
    assert "line 5: MOS 7.5 is outside 1-5" in message
    assert "line 6: image 'a.jpg' is listed again (first on line 2)" in message

    with pytest.warns(DatasetWarning, match="skipped 3 bad rows"):
        records = read_koniq10k(root, strict=False)
    assert {r.path.name: r.mos for r in records} == {"a.jpg": 50.0, "d.jpg": 100.0}


def test_koniq_wrong_file_names_the_missing_column(tmp_path):
    root = tmp_path / "koniq10k"
    (root / "images").mkdir(parents=True)
    (root / "koniq10k_scores_and_distributions.csv").write_text("image_name,score\na.jpg,3\n")
    with pytest.raises(DatasetError, match="no 'MOS' column"):
        read_koniq10k(root)


def test_missing_folder_and_label_file_say_what_to_do(tmp_path):
    with pytest.raises(DatasetError, match="--data-root"):
        read_koniq10k(tmp_path / "nowhere")
    (tmp_path / "koniq10k").mkdir()
    with pytest.raises(DatasetError, match="looked for koniq10k_scores_and_distributions.csv"):
        read_koniq10k(tmp_path / "koniq10k")


def test_label_file_that_is_not_utf8_is_a_dataset_error(tmp_path):
    root = tmp_path / "koniq10k"
    (root / "images").mkdir(parents=True)
    (root / "koniq10k_scores_and_distributions.csv").write_bytes(b"image_name,MOS\n\xff\xfe,3\n")
    with pytest.raises(DatasetError, match="not UTF-8"):
        read_koniq10k(root)


# ---------------------------------------------------------------------------- SPAQ


def test_spaq_excerpt_bom_mos_and_attributes(formats):
    assert (formats / "spaq" / "SPAQ_annotations.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    with pytest.warns(DatasetWarning, match="39 of 40"):
        records = read_spaq(formats / "spaq", allow_missing=True)
    assert len(records) == 1
    record = records[0]
    assert record.path.name == "10241.jpg" and record.mos == pytest.approx(36.11)
    # 10241.jpg: Brightness 28.5, Colorfulness 43.11, Contrast 41.33, Noisiness 35.78,
    # Sharpness 28.13
    assert record.attributes == pytest.approx(
        {
            "blur": (60 - 28.13) / 60,
            "noise": (60 - 35.78) / 60,
            "underexposure": (60 - 28.5) / 60,
            "color": (60 - 41.33) / 60,  # the worse of Contrast and Colorfulness
        }
    )


def test_spaq_attributes_rate_quality_so_high_scores_mean_no_defect(formats):
    """The mapping assumes every SPAQ attribute score is higher-is-better; the label file
    itself shows it: each attribute rises with MOS."""
    with open(formats / "spaq" / "SPAQ_annotations.csv", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    mos = np.array([float(r["MOS"]) for r in rows])
    for column in ("Brightness", "Colorfulness", "Contrast", "Noisiness", "Sharpness"):
        values = np.array([float(r[column]) for r in rows])
        rank_corr = np.corrcoef(np.argsort(np.argsort(mos)), np.argsort(np.argsort(values)))[0, 1]
        assert rank_corr > 0.8, column


def test_defect_severity_anchors():
    assert defect_severity(100) == 0.0
    assert defect_severity(60) == 0.0
    assert defect_severity(30) == pytest.approx(0.5)
    assert defect_severity(0) == 1.0
    assert defect_severity(50, defect_free_at=100) == pytest.approx(0.5)


def write_xlsx(path: Path, rows: list[list[object]]) -> None:
    """A minimal .xlsx as Excel writes it: strings in the shared-string table, numbers inline."""
    shared: list[str] = []
    sheet_rows = []
    for r, row in enumerate(rows, start=1):
        cells = []
        for c, value in enumerate(row):
            ref = f"{chr(ord('A') + c)}{r}"
            if isinstance(value, str):
                shared.append(value)
                cells.append(f'<c r="{ref}" t="s"><v>{len(shared) - 1}</v></c>')
            else:
                cells.append(f'<c r="{ref}"><v>{value}</v></c>')
        sheet_rows.append(f'<row r="{r}">{"".join(cells)}</row>')
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(
            "xl/workbook.xml",
            f'<workbook xmlns="{main}" xmlns:r="{rel}"><sheets>'
            '<sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>',
        )
        archive.writestr(
            "xl/_rels/workbook.xml.rels",
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f'<Relationship Id="rId1" Type="{rel}/worksheet" Target="worksheets/data.xml"/>'
            "</Relationships>",
        )
        archive.writestr(
            "xl/worksheets/data.xml",
            f'<worksheet xmlns="{main}"><sheetData>{"".join(sheet_rows)}</sheetData></worksheet>',
        )
        archive.writestr(
            "xl/sharedStrings.xml",
            f'<sst xmlns="{main}">' + "".join(f"<si><t>{s}</t></si>" for s in shared) + "</sst>",
        )


def test_spaq_official_xlsx_reads_like_the_csv(tmp_path):
    root = tmp_path / "spaq"
    for name in ("00001.jpg", "00002.jpg"):
        touch(root / "TestImage" / name)
    header = ["Image name", "MOS", "Brightness", "Colorfulness", "Contrast", "Noisiness",
              "Sharpness"]
    write_xlsx(
        root / "MOS and Image attribute scores.xlsx",
        [header, ["00001.jpg", 48.86, 47.43, 55.57, 55.71, 37.86, 42.57],
         ["00002.jpg", 62.5, 55.38, 67.13, 53.13, 57.5, 47.5]],
    )
    from_xlsx = read_spaq(root)
    (root / "MOS and Image attribute scores.xlsx").unlink()
    (root / "SPAQ_annotations.csv").write_text(
        "\ufeff" + ",".join(header) + "\n00001.jpg,48.86,47.43,55.57,55.71,37.86,42.57\n"
        "00002.jpg,62.5,55.38,67.13,53.13,57.5,47.5\n",
        encoding="utf-8",
    )
    from_csv = read_spaq(root)
    assert [(r.path, r.mos, r.attributes) for r in from_xlsx] == [
        (r.path, r.mos, r.attributes) for r in from_csv
    ]
    assert from_xlsx[0].path == root.absolute() / "TestImage" / "00001.jpg"


def test_spaq_xlsx_bad_cell_reports_its_row_and_broken_workbook_is_clear(tmp_path):
    root = tmp_path / "spaq"
    touch(root / "images" / "00001.jpg")
    write_xlsx(root / "scores.xlsx", [["Image name", "MOS"], ["00001.jpg", "n/a"]])
    with pytest.raises(DatasetError, match="row 2: MOS 'n/a' is not a number"):
        read_spaq(root, "scores.xlsx")
    (root / "broken.xlsx").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DatasetError, match="save its first sheet as CSV"):
        read_spaq(root, "broken.xlsx")


# ---------------------------------------------------------------------------- AVA


def test_ava_excerpt_mean_of_vote_histogram(formats):
    with pytest.warns(DatasetWarning, match="35 of 40"):
        records = read_ava(formats / "ava", allow_missing=True)
    by_id = {r.path.stem: r for r in records}
    assert sorted(by_id) == ["42039", "42040", "42041", "42042", "42044"]
    counts = [1, 5, 15, 22, 57, 23, 12, 1, 1, 4]  # 42041, line 1 of AVA.txt
    mean = sum(score * n for score, n in zip(range(1, 11), counts)) / sum(counts)
    assert by_id["42041"].raw_score == pytest.approx(mean)
    assert by_id["42041"].mos == pytest.approx((mean - 1) / 9 * 100)


def test_ava_bad_lines(tmp_path):
    root = tmp_path / "ava"
    for image_id in ("1", "2", "3", "4"):
        touch(root / "images" / f"{image_id}.jpg")
    (root / "AVA.txt").write_text(
        "1 1 0 0 0 0 10 0 0 0 0 0 0 0 0\n"
        "2 2 0 0 x 0 10 0 0 0 0 0 0 0 0\n"
        "3 3 0 0 0\n"
        "4 4 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
    )
    with pytest.raises(DatasetError) as info:
        read_ava(root)
    message = str(info.value)
    assert "line 2: vote counts" in message and "are not all whole numbers" in message
    assert "line 3: expected index, image id and 10 vote counts, got 5 fields" in message
    assert "line 4: image 4: 0 votes" in message
    with pytest.warns(DatasetWarning):
        records = read_ava(root, strict=False)
    assert [(r.path.name, r.raw_score) for r in records] == [("1.jpg", 5.0)]


# ---------------------------------------------------------------------------- EVA


def eva_copy(formats: Path, tmp_path: Path) -> Path:
    """The EVA excerpt with an image for every id, nested as the release nests them."""
    root = tmp_path / "eva"
    root.mkdir()
    shutil.copy(formats / "eva" / "votes_filtered.csv", root)
    with open(root / "votes_filtered.csv") as handle:
        ids = {line.split("=")[0] for line in list(handle)[1:]}
    for number, image_id in enumerate(sorted(ids)):
        touch(root / "images" / f"category{number % 3}" / f"{image_id}.jpg")
    return root


def test_eva_votes_aggregate_per_image(formats, tmp_path):
    records = read_eva(eva_copy(formats, tmp_path))
    assert len(records) == 12
    by_id = {r.path.stem: r for r in records}
    # 916480 has 8 votes: 1, 1, 2, 3, 3, 4, 5, 6 in the excerpt
    with open(formats / "eva" / "votes_filtered.csv") as handle:
        scores = [float(line.split("=")[2]) for line in handle if line.startswith("916480=")]
    assert by_id["916480"].raw_score == pytest.approx(sum(scores) / len(scores)) == 3.125
    assert by_id["916480"].mos == pytest.approx(31.25)
    assert by_id["916480"].path.parent.name.startswith("category")


def test_eva_excerpt_without_images_is_a_clear_error(formats, tmp_path):
    with pytest.raises(DatasetError, match="no image folder"):
        read_eva(formats / "eva")
    root = tmp_path / "eva"
    (root / "images").mkdir(parents=True)
    shutil.copy(formats / "eva" / "votes_filtered.csv", root)
    # allow_missing is for a few lost files; none at all means the folder is wrong
    with pytest.raises(DatasetError, match="none of the 12 images"):
        read_eva(root, allow_missing=True)


def test_eva_bad_votes(tmp_path):
    root = tmp_path / "eva"
    touch(root / "images" / "7.jpg")
    (root / "votes_filtered.csv").write_text(
        "image_id=user_id=score=difficulty\n7=U1=6=0\n7=U2=11=0\n7=U3=good=0\n=U4=5=0\n"
    )
    with pytest.raises(DatasetError) as info:
        read_eva(root)
    message = str(info.value)
    assert "line 3: score 11 is outside 0-10" in message
    assert "line 4: score 'good' is not a number" in message
    assert "line 5: no image_id" in message


# ---------------------------------------------------------------------------- LIVE Challenge


def test_clive_labels_csv(shared_data):
    records = read_clive(shared_data / "clive")
    assert len(records) == 696
    first = next(r for r in records if r.path.name == "10.jpg")
    assert first.mos == pytest.approx(82.9107) and first.raw_score == pytest.approx(82.9107)
    assert all(0 <= r.mos <= 100 and r.path.is_file() for r in records)


def write_release(root: Path, names: list[str], scores: list[float]) -> None:
    from scipy.io import savemat

    (root / "Data").mkdir(parents=True)
    cells = np.empty((len(names), 1), dtype=object)
    for i, name in enumerate(names):
        cells[i, 0] = np.array([name])
    savemat(root / "Data" / "AllImages_release.mat", {"AllImages_release": cells})
    savemat(root / "Data" / "AllMOS_release.mat", {"AllMOS_release": np.array([scores])})


def test_clive_official_mat_files(tmp_path):
    root = tmp_path / "clive"
    names = [f"t{i}.bmp" for i in range(1, 8)] + [f"{i}.JPG" for i in range(8, 1170)]
    scores = [float(i % 100) for i in range(1169)]
    write_release(root, names, scores)
    for name in names[:7]:
        touch(root / "Images" / "trainingImages" / name)
    touch(root / "Images" / "8.JPG")
    touch(root / "Images" / "9.jpg")  # a BMP/JPG original converted to .jpg, as in shared/clive
    with pytest.warns(DatasetWarning, match="1160 of 1162"):
        records = read_clive(root, allow_missing=True)
    assert [(r.path.name, r.mos) for r in records] == [("8.JPG", 7.0), ("9.jpg", 8.0)]

    with pytest.warns(DatasetWarning, match="1160 of 1169"):
        with_practice = read_clive(root, allow_missing=True, include_training_images=True)
    assert [r.path.parent.name for r in with_practice[:7]] == ["trainingImages"] * 7
    assert len(with_practice) == 9


def test_clive_mat_files_that_disagree(tmp_path):
    root = tmp_path / "clive"
    write_release(root, ["a.jpg", "b.jpg"], [50.0])
    touch(root / "Images" / "a.jpg")
    with pytest.raises(DatasetError, match="lists 2 images but AllMOS_release.mat has 1"):
        read_clive(root, "Data/AllMOS_release.mat")


# ---------------------------------------------------------------------------- generic CSV


def test_generic_csv_mos_range_and_classes(tmp_path):
    root = tmp_path / "mine"
    for name in ("a.jpg", "sub/b.jpg", "c.jpg", "d.jpg"):
        touch(root / name)
    (root / "labels.csv").write_text(
        "path,mos,class\na.jpg,1,rejected\nsub/b.jpg,5,2\nc.jpg,,Pending\nd.jpg,3,\n"
    )
    records = read_csv(root, mos_range=[1, 5])
    got = {r.path.relative_to(root.absolute()).as_posix(): (r.mos, r.label, r.raw_score)
           for r in records}
    assert got == {
        "a.jpg": (0.0, 0, 1.0),
        "sub/b.jpg": (100.0, 2, 5.0),
        "c.jpg": (None, 1, None),
        "d.jpg": (50.0, None, 3.0),
    }


def test_generic_csv_bad_rows(tmp_path):
    root = tmp_path / "mine"
    touch(root / "a.jpg")
    (root / "labels.csv").write_text(
        "path,mos,class\na.jpg,50,great\nb.jpg,,\nc.jpg,150,\n,20,\n"
    )
    with pytest.raises(DatasetError) as info:
        read_csv(root)
    message = str(info.value)
    assert "line 2: class 'great' is not one of rejected, pending, accepted" in message
    assert "line 3: b.jpg: neither a MOS nor a class" in message
    assert "line 4: MOS 150 is outside 0-100" in message
    assert "line 5: no image path" in message
    with pytest.raises(DatasetError, match="mos_range 5-1 must run from low to high"):
        read_csv(root, mos_range=(5, 1))


# ---------------------------------------------------------------------------- registry


def test_registry_names_every_reader_and_checks_options(formats):
    assert set(READERS) == {"koniq10k", "spaq", "ava", "eva", "clive", "csv"}
    with pytest.raises(DatasetError, match="unknown option\\(s\\) scores; this reader takes"):
        read_dataset("koniq10k", formats / "koniq10k", scores="mos")
    with pytest.raises(DatasetError, match="unknown dataset reader 'kadid'"):
        read_dataset("kadid", formats)
