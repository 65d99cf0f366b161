"""`iqs cull` / `iqs undo` / `iqs score --write-xmp` through the command line."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.helpers import exiftool, make_photo, tree
from iqs_cli.cli import app

runner = CliRunner()
EXIFTOOL = shutil.which("exiftool")


@pytest.fixture
def shoot(tmp_path) -> Path:
    """A day of shooting: two dark failures (one RAW+JPEG pair), a mid and a bright shot."""
    root = tmp_path / "2026-trip"
    make_photo(root / "day1" / "IMG_0001.JPG", brightness=3)
    (root / "day1" / "IMG_0001.CR2").write_bytes(b"raw bytes stand-in")
    make_photo(root / "day1" / "IMG_0002.JPG", brightness=130)
    make_photo(root / "day2" / "dark shot é.jpg", brightness=4)
    make_photo(root / "day2" / "bright.jpg", brightness=250)
    # A sidecar another program wrote: keywords and darktable history must survive.
    (root / "day1" / "IMG_0002.JPG.xmp").write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"'
        ' xmlns:darktable="http://darktable.sf.net/" darktable:history_end="1">'
        "<dc:subject><rdf:Bag><rdf:li>holiday</rdf:li><rdf:li>beach</rdf:li></rdf:Bag></dc:subject>"
        '<darktable:history><rdf:Seq><rdf:li darktable:operation="exposure" darktable:enabled="1"/>'
        "</rdf:Seq></darktable:history></rdf:Description></rdf:RDF></x:xmpmeta>",
        encoding="utf-8",
    )
    return root


def exif(*paths: Path) -> list[dict]:
    return exiftool(*paths, options=("-G1", "-struct"))


def test_cull_labels_moves_and_undo_restores(shoot, tiny_model):
    before = tree(shoot)
    result = runner.invoke(app, ["cull", str(shoot), "--move-rejected", "--model", str(tiny_model)])
    assert result.exit_code == 0, result.output
    rejected = shoot / "_rejected"
    assert sorted(p.relative_to(rejected).as_posix() for p in rejected.rglob("*") if p.is_file()) == [
        "day1/IMG_0001.CR2", "day1/IMG_0001.CR2.xmp", "day1/IMG_0001.JPG", "day1/IMG_0001.JPG.xmp",
        "day2/dark shot é.jpg", "day2/dark shot é.jpg.xmp",
    ]
    assert (shoot / "day2" / "bright.jpg.xmp").exists()
    if EXIFTOOL:
        [raw_side, mid] = exif(rejected / "day1" / "IMG_0001.CR2.xmp", shoot / "day1" / "IMG_0002.JPG.xmp")
        assert raw_side["XMP-digiKam:PickLabel"] == 1 and raw_side["XMP-xmp:Rating"] == -1
        assert mid["XMP-digiKam:PickLabel"] == 2 and mid["XMP-xmp:Rating"] == 3
        assert mid["XMP-dc:Subject"] == ["holiday", "beach"]
        assert mid["XMP-darktable:History"] == [{"Enabled": 1, "Operation": "exposure"}]
    assert "undo with" in result.stdout

    undone = runner.invoke(app, ["undo", str(shoot)])
    assert undone.exit_code == 0, undone.output
    assert tree(shoot) == before
    again = runner.invoke(app, ["undo", str(shoot)])
    assert again.exit_code == 0 and "nothing to undo" in again.stdout


def test_dry_run_changes_nothing(shoot, tiny_model):
    before = tree(shoot)
    result = runner.invoke(app, ["cull", str(shoot), "--move-rejected", "--dry-run", "--model", str(tiny_model)])
    assert result.exit_code == 0, result.output
    assert "would move day1/IMG_0001.JPG -> _rejected/day1/IMG_0001.JPG" in result.stdout
    assert tree(shoot) == before and not (shoot / ".iqs").exists()


def test_to_inside_the_tree_is_refused(shoot, tiny_model):
    before = tree(shoot)
    result = runner.invoke(app, ["cull", str(shoot), "--move-rejected", "--to", str(shoot / "day1" / "bad"),
                                 "--model", str(tiny_model)])
    assert result.exit_code == 2 and "must not be inside" in result.output
    assert tree(shoot) == before


def test_to_elsewhere_keeps_subfolders(shoot, tiny_model, tmp_path):
    target = tmp_path / "rejects"
    result = runner.invoke(app, ["cull", str(shoot), "--move-rejected", "--to", str(target), "--model", str(tiny_model)])
    assert result.exit_code == 0, result.output
    assert (target / "day2" / "dark shot é.jpg").exists() and not (shoot / "_rejected").exists()


def test_score_write_xmp_labels_without_moving(shoot, tiny_model):
    result = runner.invoke(app, ["score", str(shoot), "--write-xmp", "--color-labels", "-f", "jsonl",
                                 "--model", str(tiny_model), "--sidecar-name", "lightroom"])
    assert result.exit_code == 0, result.output
    assert (shoot / "day1" / "IMG_0001.xmp").exists()  # RAW + JPEG share photo.xmp
    assert (shoot / "day1" / "IMG_0001.JPG").exists() and not (shoot / "_rejected").exists()
    if EXIFTOOL:
        [side] = exif(shoot / "day1" / "IMG_0001.xmp")
        assert side["XMP-xmp:Label"] == "Red" and side["XMP-digiKam:ColorLabel"] == 1


def test_broken_sidecar_is_reported_and_left_alone(shoot, tiny_model):
    broken = shoot / "day2" / "bright.jpg.xmp"
    broken.write_bytes(b"<x:xmpmeta><rdf:RDF")  # truncated
    result = runner.invoke(app, ["cull", str(shoot), "--model", str(tiny_model)])
    assert result.exit_code == 1
    assert broken.read_bytes() == b"<x:xmpmeta><rdf:RDF"
    assert "bright.jpg.xmp" in result.stderr
    assert (shoot / "day1" / "IMG_0002.JPG.xmp").read_text().count("iqs:") > 0  # the run went on


def test_sigkill_mid_move_then_undo(tmp_path, tiny_model):
    """SIGKILL `iqs cull --move-rejected` while it moves 200 files: every file exists exactly
    once with identical bytes, and `iqs undo` restores the original tree."""
    root = tmp_path / "card"
    for i in range(200):
        make_photo(root / f"d{i % 4}" / f"IMG_{i:04d}.JPG", size=(16, 12), brightness=2, seed=i)
    before = tree(root)
    env = dict(os.environ)
    process = subprocess.Popen(
        [sys.executable, "-m", "iqs_cli", "cull", str(root), "--move-rejected", "--model", str(tiny_model), "-q"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            logs = list((root / ".iqs").glob("journal-*.jsonl")) if (root / ".iqs").exists() else []
            if logs and logs[0].read_bytes().count(b'"op": "move"') >= 40:
                break
            assert process.poll() is None, "the run finished before it could be killed"
            time.sleep(0.002)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    after = tree(root)
    originals = [p for p in before]
    for relative in originals:
        places = [p for p in (relative, f"_rejected/{relative}") if p in after]
        assert len(places) == 1, (relative, places)
        assert after[places[0]] == before[relative]
    assert 0 < sum(p.startswith("_rejected/") and not p.endswith(".xmp") for p in after) < 200
    undone = runner.invoke(app, ["undo", str(root)])
    assert undone.exit_code == 0, undone.output
    assert tree(root) == before
