"""`iqs apply`: a report page's changes file written as a person's XMP labels, journaled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from iqs_cli import xmp
from iqs_cli.apply import ChangesError, apply_changes, rating_for
from iqs_cli.cli import app
from iqs_cli.journal import FolderLock
from iqs_cli.result import ShotResult
from iqs_cli.undo import undo
from tests.helpers import make_photo

runner = CliRunner()


def verdict(photo: Path, label: str = "rejected", stars: int = 1) -> ShotResult:
    return ShotResult(str(photo), [str(photo)], label=label, mos=20.0, stars=stars,
                      probabilities={"rejected": 0.8, "pending": 0.15, "accepted": 0.05},
                      reasons=["blur"], model="tiny", model_version="0.0.1")


def changes_file(path: Path, roots, changes, **extra) -> Path:
    data = {"format": "iqs-changes", "version": 1, "roots": [str(r) for r in roots],
            "changes": changes, **extra}
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "trip"
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        photo = make_photo(root / name)
        xmp.write_shot(verdict(photo), color_labels=name == "c.jpg")
    return root


def test_person_labels_replace_iqs_labels_and_later_runs_keep_them(folder):
    photo = folder / "a.jpg"
    xmp.write_person_labels(photo, "accepted", 4)
    labels = xmp.read_labels(folder / "a.jpg.xmp")
    assert (labels["pick"], labels["rating"], labels["by_iqs"]) == (3, 4, False)
    assert labels["iqs"]["label"] == "rejected" and labels["iqs"]["mos"] == 20  # iqs's verdict stays
    assert "written" not in labels["iqs"]  # nothing recorded as iqs's
    # The next iqs run refreshes its own values and keeps the person's labels.
    [outcome] = xmp.write_shot(verdict(photo))
    assert outcome.human_kept
    again = xmp.read_labels(folder / "a.jpg.xmp")
    assert (again["pick"], again["rating"]) == (3, 4)


def test_iqs_color_label_follows_a_persons_pick(folder):
    xmp.write_person_labels(folder / "c.jpg", "accepted", 3)
    labels = xmp.read_labels(folder / "c.jpg.xmp")
    assert (labels["pick"], labels["color"], labels["label"]) == (3, 4, "Green")
    assert not labels["by_iqs"]
    # Without an iqs color label, none is added.
    xmp.write_person_labels(folder / "b.jpg", "pending", 2)
    assert xmp.read_labels(folder / "b.jpg.xmp")["color"] is None


def test_person_labels_keep_foreign_properties(tmp_path):
    photo = make_photo(tmp_path / "d.jpg")
    source = Path(__file__).parent / "data" / "xmp" / "darktable.xmp"
    sidecar = tmp_path / "d.jpg.xmp"
    sidecar.write_bytes(source.read_bytes())
    xmp.write_person_labels(photo, "rejected", -1)
    text = sidecar.read_text(encoding="utf-8")
    assert "darktable:history" in text  # every foreign property is still there
    labels = xmp.read_labels(sidecar)
    assert (labels["pick"], labels["rating"]) == (1, -1)


def test_rating_for_holds_stars_in_the_labels_range():
    assert rating_for("rejected", 4) == -1
    assert rating_for("accepted", 1) == 3 and rating_for("accepted", 5) == 5
    assert rating_for("pending", 5) == 3 and rating_for("pending", None) == 2


def test_apply_is_journaled_and_undone(folder, tmp_path):
    before = {p.name: p.read_bytes() for p in folder.glob("*.xmp")}
    changes = changes_file(tmp_path / "changes.json", [folder], [
        {"path": str(folder / "a.jpg"), "files": [str(folder / "a.jpg")], "label": "accepted",
         "stars": 4},
        {"path": str(folder / "b.jpg"), "label": "pending", "stars": 5},
    ])
    result = runner.invoke(app, ["apply", str(changes)])
    assert result.exit_code == 0, result.output
    assert "labelled 2 shots" in result.output and f"iqs undo {folder.resolve()}" in result.output
    assert xmp.read_labels(folder / "a.jpg.xmp")["rating"] == 4
    assert xmp.read_labels(folder / "b.jpg.xmp")["rating"] == 3  # pending holds 2-3 stars
    assert len(list((folder / ".iqs").glob("journal-*.jsonl"))) == 1
    report = undo(folder)
    assert not report.errors
    assert {p.name: p.read_bytes() for p in folder.glob("*.xmp")} == before


def test_bad_entries_fail_one_by_one(folder, tmp_path):
    outside = make_photo(tmp_path / "elsewhere" / "x.jpg")
    changes = changes_file(tmp_path / "changes.json", [folder], [
        {"path": str(folder / "gone.jpg"), "label": "accepted"},
        {"path": str(outside), "label": "accepted"},
        {"path": str(folder / "a.jpg"), "label": "great"},
        {"path": str(folder / "b.jpg"), "label": "accepted", "stars": 9},
        {"path": "relative.jpg", "label": "accepted"},
        "not an entry",
        {"path": str(folder / "c.jpg"), "label": "accepted"},
    ])
    report = apply_changes(changes)
    assert report.applied == 1 and len(report.errors) == 6
    text = "\n".join(report.errors)
    for expected in ("gone.jpg", "not found", "outside the report's folders", "'great'",
                     "stars 9", "not an absolute path", "change 6"):
        assert expected in text
    assert xmp.read_labels(folder / "c.jpg.xmp")["pick"] == 3
    assert xmp.read_labels(folder / "a.jpg.xmp")["by_iqs"]  # untouched
    assert not (tmp_path / "elsewhere" / "x.jpg.xmp").exists()
    result = runner.invoke(app, ["apply", str(changes)])
    assert result.exit_code == 1
    assert "6 changes failed" in result.output


@pytest.mark.parametrize("content, says", [
    ("not json", "not JSON"),
    ('{"format": "something else"}', "not an iqs changes file"),
    ('{"format": "iqs-changes", "version": 99, "roots": ["/"], "changes": []}', "version 99"),
    ('{"format": "iqs-changes", "version": 1, "roots": ["rel"], "changes": []}', "absolute"),
])
def test_not_a_changes_file_is_a_usage_error(tmp_path, content, says):
    path = tmp_path / "changes.json"
    path.write_text(content)
    with pytest.raises(ChangesError, match=says):
        apply_changes(path)
    result = runner.invoke(app, ["apply", str(path)])
    assert result.exit_code == 2 and says in result.output


def test_busy_folder_exits_3(folder, tmp_path):
    changes = changes_file(tmp_path / "changes.json", [folder],
                           [{"path": str(folder / "a.jpg"), "label": "accepted"}])
    before = (folder / "a.jpg.xmp").read_bytes()
    with FolderLock(folder, action="cull"):
        result = runner.invoke(app, ["apply", str(changes)])
    assert result.exit_code == 3, result.output
    assert "another iqs run" in result.output
    assert (folder / "a.jpg.xmp").read_bytes() == before
