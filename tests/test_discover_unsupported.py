"""discover: counting the photos a walk passes over because iqs cannot read their format."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from iqs_cli.decode import IMAGE_EXTENSIONS, RAW_EXTENSIONS
from iqs_cli.discover import (
    SKIPPED_PHOTO_EXTENSIONS,
    DiscoveryError,
    Shot,
    discover,
    discover_files,
    skipped_summary,
)


def _touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def test_walk_counts_unreadable_photos_by_extension(tmp_path):
    _touch(
        tmp_path,
        "a.jxl", "B.JXL", "sub/c.jxl", "d.gif", "e.x3f", "f.psd",
        "g.jpg", "IMG_1.HEIC", "h.CR2",  # photos iqs reads: not skipped
        "g.jpg.xmp", "notes.txt", "clip.mov", "IMG_1.MOV", "h.pp3",  # not photos: not counted
        ".hidden.jxl", "._i.jxl", ".cache/j.jxl", "_rejected/k.jxl",  # never walked
    )  # fmt: skip
    (tmp_path / "folder.jxl").mkdir()  # a folder is not a file
    skipped: Counter[str] = Counter()
    shots = [s for s in discover([tmp_path], skipped=skipped) if isinstance(s, Shot)]
    assert sorted(s.primary.name for s in shots) == ["IMG_1.HEIC", "g.jpg", "h.CR2"]
    assert skipped == Counter({".jxl": 3, ".gif": 1, ".x3f": 1, ".psd": 1})


def test_no_recursive_counts_only_the_folder_itself(tmp_path):
    _touch(tmp_path, "a.jxl", "sub/b.jxl")
    skipped: Counter[str] = Counter()
    assert list(discover([tmp_path], recursive=False, skipped=skipped)) == []
    assert skipped == Counter({".jxl": 1})


def test_skipped_is_optional_and_the_results_are_the_same(tmp_path):
    _touch(tmp_path, "a.jxl", "b.jpg", "c.bmp")
    plain = list(discover([tmp_path]))
    counted = list(discover([tmp_path], skipped=Counter()))
    assert plain == counted and [s.primary.name for s in plain] == ["b.jpg"]


def test_explicit_unreadable_file_is_an_error_not_a_count(tmp_path):
    _touch(tmp_path, "a.jxl")
    skipped: Counter[str] = Counter()
    [error] = list(discover([tmp_path / "a.jxl"], skipped=skipped))
    assert isinstance(error, DiscoveryError) and "extension .jxl" in error.message
    assert skipped == Counter()


def test_stdin_lists_count_like_walks(tmp_path):
    _touch(tmp_path, "a.jxl", "b.jpg", "c.gif", "d.txt", ".e.jxl")
    skipped: Counter[str] = Counter()
    entries = [str(tmp_path / n) for n in ("a.jxl", "b.jpg", "c.gif", "d.txt", ".e.jxl")]
    shots = list(discover_files(entries, skipped=skipped))
    assert [s.primary.name for s in shots] == ["b.jpg"]
    assert skipped == Counter({".jxl": 1, ".gif": 1, "other": 1, "hidden": 1})


def test_dangling_link_named_like_an_unreadable_photo_is_not_counted(tmp_path):
    os.symlink(tmp_path / "gone.jxl", tmp_path / "link.jxl")
    skipped: Counter[str] = Counter()
    assert list(discover([tmp_path], skipped=skipped)) == []
    assert skipped == Counter()


def test_skipped_extensions_are_photos_iqs_does_not_read():
    assert {".jxl", ".gif", ".bmp", ".psd", ".x3f", ".raw"} <= SKIPPED_PHOTO_EXTENSIONS
    assert not SKIPPED_PHOTO_EXTENSIONS & (IMAGE_EXTENSIONS | RAW_EXTENSIONS)
    assert not SKIPPED_PHOTO_EXTENSIONS & {".xmp", ".pp3", ".dop", ".txt", ".mov", ".mp4"}
    assert all(e == e.lower() and e.startswith(".") for e in SKIPPED_PHOTO_EXTENSIONS)


def test_skipped_summary():
    assert skipped_summary(Counter()) == ""
    one = skipped_summary(Counter({".jxl": 1}))
    assert one.startswith("1 .jxl file skipped (iqs reads ")
    assert "heic" in one and "jpg" in one and "camera RAW" in one and "\n" not in one
    two = skipped_summary(Counter({".jxl": 2}))
    assert two.startswith("2 .jxl files skipped (")
    many = skipped_summary(Counter({".gif": 1, ".jxl": 5, ".bmp": 1}))
    assert many.startswith("5 .jxl files, 1 .bmp file and 1 .gif file skipped (")
