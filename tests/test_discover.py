"""discover: walking folders into shots, RAW+JPEG grouping, skips, links, stdin lists."""

from __future__ import annotations

import io
import os
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import make_photo
from iqs_cli import discover as discover_module
from iqs_cli.decode import load_rgb
from iqs_cli.discover import DiscoveryError, Shot, discover, discover_files, paths_from_stdin


def _touch(root: Path, *names: str) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def _names(results, root: Path) -> list:
    """Shots as lists of paths relative to root; errors as ("error", relative path)."""
    out = []
    for item in results:
        if isinstance(item, Shot):
            assert item.primary in item.files
            assert all(p.is_absolute() for p in item.files)
            out.append([str(p.relative_to(root)) for p in item.files])
        else:
            out.append(("error", os.path.relpath(item.path, root)))
    return out


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "photos"
    # created out of order on purpose: the result must not depend on it
    _touch(
        root,
        "sub/deep/d.tif",
        "sub/c.jpg",
        "b.jpg",
        "aa/e.JPEG",
        "a.png",
        "notes.txt",
        "a.png.xmp",
        "b.pp3",
        ".hidden.jpg",
        ".cache/x.jpg",
        "_rejected/r.jpg",
        "sub/_rejected/r2.jpg",
    )
    return root


def test_recursive_walk_order_and_skips(tree):
    assert _names(discover([tree]), tree) == [
        ["a.png"],
        ["b.jpg"],
        ["aa/e.JPEG"],
        ["sub/c.jpg"],
        ["sub/deep/d.tif"],
    ]
    assert _names(discover([tree]), tree) == _names(discover([str(tree)]), tree)  # repeatable


def test_no_recursive_takes_only_the_folder_files(tree):
    assert _names(discover([tree], recursive=False), tree) == [["a.png"], ["b.jpg"]]


def test_rejected_dirname_and_skip_dirs(tree):
    named = _names(discover([tree], rejected_dirname="aa"), tree)
    assert ["aa/e.JPEG"] not in named and ["_rejected/r.jpg"] in named
    skipped = _names(discover([tree], skip_dirs=[tree / "sub" / ".." / "sub"]), tree)
    assert skipped == [["a.png"], ["b.jpg"], ["aa/e.JPEG"]]


def test_an_input_folder_is_walked_even_if_hidden_or_named_rejected(tree):
    assert _names(discover([tree / "_rejected"]), tree) == [["_rejected/r.jpg"]]
    assert _names(discover([tree / ".cache"]), tree) == [[".cache/x.jpg"]]


def test_raw_and_jpeg_siblings_form_one_shot(tmp_path):
    _touch(
        tmp_path,
        "IMG_1.CR2", "IMG_1.JPG", "IMG_1.CR2.xmp",
        "IMG_2.cr2", "img_2.jpg",
        "IMG_3.JPG", "IMG_3.PNG",
        "IMG_4.NEF",
        "IMG_5.DNG", "IMG_5.TIF",
        "IMG_6.ARW", "IMG_6.dng", "IMG_6.jpeg",
    )  # fmt: skip
    shots = list(discover([tmp_path]))
    assert all(isinstance(s, Shot) for s in shots)
    got = [(s.primary.name, [p.name for p in s.files]) for s in shots]
    assert got == [
        ("IMG_1.JPG", ["IMG_1.CR2", "IMG_1.JPG"]),
        ("img_2.jpg", ["IMG_2.cr2", "img_2.jpg"]),
        ("IMG_3.JPG", ["IMG_3.JPG"]),  # no RAW: two different pictures
        ("IMG_3.PNG", ["IMG_3.PNG"]),
        ("IMG_4.NEF", ["IMG_4.NEF"]),
        ("IMG_5.TIF", ["IMG_5.DNG", "IMG_5.TIF"]),
        ("IMG_6.jpeg", ["IMG_6.ARW", "IMG_6.dng", "IMG_6.jpeg"]),
    ]


def test_explicit_files_are_their_own_shots_unless_raw_and_jpeg_come_together(tmp_path):
    _touch(tmp_path, "IMG_1.CR2", "IMG_1.JPG", "IMG_2.JPG", "notes.txt", "dir/x.jpg")
    jpg, raw = tmp_path / "IMG_1.JPG", tmp_path / "IMG_1.CR2"
    assert _names(discover([jpg]), tmp_path) == [["IMG_1.JPG"]]
    results = list(discover([jpg, tmp_path / "notes.txt", tmp_path / "dir", raw, tmp_path / "nope.jpg"]))
    assert _names(results, tmp_path) == [
        ["IMG_1.CR2", "IMG_1.JPG"],
        ("error", "notes.txt"),
        ["dir/x.jpg"],
        ("error", "nope.jpg"),
    ]
    assert results[0].primary == jpg
    assert results[1].message.startswith("not a photo iqs can read (extension .txt); supported: ")
    assert "jpg" in results[1].message and "CR3" in results[1].message
    assert results[3] == DiscoveryError(str(tmp_path / "nope.jpg"), "no such file or folder")


def test_relative_inputs_give_absolute_paths(tmp_path, monkeypatch):
    _touch(tmp_path, "a/b.jpg")
    monkeypatch.chdir(tmp_path)
    (shot,) = discover(["a"])
    assert shot.primary == tmp_path / "a" / "b.jpg"
    (shot,) = discover(["a/../a/b.jpg"])
    assert shot.files == [tmp_path / "a" / "b.jpg"]


def test_overlapping_inputs_score_each_file_once(tree):
    once = _names(discover([tree]), tree)
    assert _names(discover([tree, tree / "sub", tree / "b.jpg"]), tree) == once
    sub_first = _names(discover([tree / "sub", tree]), tree)
    assert sorted(map(str, sub_first)) == sorted(map(str, once))
    assert sub_first[0] == ["sub/c.jpg"]


def test_symlink_loops_end_and_linked_folders_and_files_are_followed(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    _touch(root, "a.jpg", "sub/b.jpg")
    _touch(outside, "o.jpg", "single.jpg")
    try:
        (root / "sub" / "loop").symlink_to(root, target_is_directory=True)
        (root / "sub" / "self").symlink_to(root / "sub", target_is_directory=True)
        (root / "linked").symlink_to(outside, target_is_directory=True)
        (root / "z.jpg").symlink_to(outside / "single.jpg")
    except OSError:
        pytest.skip("this filesystem has no symbolic links")
    assert _names(discover([root]), root) == [["a.jpg"], ["z.jpg"], ["linked/o.jpg"], ["sub/b.jpg"]]


def test_broken_symlinks(tmp_path):
    _touch(tmp_path, "ok.jpg")
    try:
        (tmp_path / "dead.jpg").symlink_to(tmp_path / "missing.jpg")
        (tmp_path / "dead.xmp").symlink_to(tmp_path / "missing.xmp")  # a sidecar: not our business
        (tmp_path / "loop.jpg").symlink_to(tmp_path / "loop.jpg")
    except OSError:
        pytest.skip("this filesystem has no symbolic links")
    results = list(discover([tmp_path]))
    errors = {Path(e.path).name: e.message for e in results if isinstance(e, DiscoveryError)}
    assert errors == {
        "dead.jpg": "broken symbolic link: its target does not exist",
        "loop.jpg": "symbolic link loop: the link points back at itself",
    }
    assert [s.primary.name for s in results if isinstance(s, Shot)] == ["ok.jpg"]
    (explicit,) = discover([tmp_path / "dead.jpg"])
    assert explicit.message == "broken symbolic link: its target does not exist"


def test_folder_named_like_a_photo(tmp_path):
    _touch(tmp_path, "x.jpg/inside.jpg")
    assert _names(discover([tmp_path]), tmp_path) == [["x.jpg/inside.jpg"]]
    assert _names(discover([tmp_path / "x.jpg"]), tmp_path) == [["x.jpg/inside.jpg"]]
    skipped = Counter()
    assert list(discover_files([str(tmp_path / "x.jpg")], skipped=skipped)) == []
    assert skipped == Counter({"folder": 1})  # a folder in a list is passed over, with a note


def test_unreadable_folder_is_an_error_and_the_walk_goes_on(tmp_path, monkeypatch):
    _touch(tmp_path, "a/one.jpg", "b/two.jpg")
    real_scandir = os.scandir
    locked = str(tmp_path / "a")

    def scandir(path):
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_scandir(path)

    monkeypatch.setattr(discover_module.os, "scandir", scandir)
    results = list(discover([tmp_path]))
    message = "permission denied: cannot list this folder; check its permissions"
    assert results[0] == DiscoveryError(locked, message)
    assert [s.primary.name for s in results[1:]] == ["two.jpg"]


def test_fifo_named_like_a_photo(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this system")
    os.mkfifo(tmp_path / "pipe.jpg")
    assert list(discover([tmp_path])) == []
    (error,) = discover([tmp_path / "pipe.jpg"])
    assert "not a regular file" in error.message


def test_non_utf8_names_open(tmp_path):
    folder = os.path.join(os.fsencode(tmp_path), b"caf\xe9")
    name = os.path.join(folder, b"ph\xf6to.jpg")
    try:
        os.mkdir(folder)
        with open(name, "wb"):
            pass
    except OSError:
        pytest.skip("this filesystem refuses names that are not UTF-8")
    make_photo(Path(os.fsdecode(name)), size=(40, 30))
    (shot,) = discover([tmp_path])
    assert os.fsencode(shot.primary) == name
    assert load_rgb(shot.primary, 0).size == (40, 30)
    (from_list,) = discover_files(paths_from_stdin(io.BytesIO(name + b"\n")))
    assert from_list.primary == shot.primary


# --- stdin ------------------------------------------------------------------------------------


def test_paths_from_stdin_lines():
    data = b"a.jpg\n b c.jpg \n\n\nd.jpg\r\ne.jpg"
    assert list(paths_from_stdin(io.BytesIO(data))) == ["a.jpg", " b c.jpg ", "d.jpg", "e.jpg"]


def test_paths_from_stdin_nul_separated():
    data = b"with\nnewline.jpg\0plain.jpg\0\0"
    assert list(paths_from_stdin(io.BytesIO(data))) == ["with\nnewline.jpg", "plain.jpg"]


def test_paths_from_stdin_text_stream_and_non_utf8():
    stream = io.TextIOWrapper(io.BytesIO(b"caf\xe9.jpg\nok.jpg\n"), encoding="utf-8")
    paths = list(paths_from_stdin(stream))  # reads the bytes underneath, not the text
    assert [os.fsencode(p) for p in paths] == [b"caf\xe9.jpg", b"ok.jpg"]
    assert list(paths_from_stdin(io.StringIO("x.jpg\ny.jpg\n"))) == ["x.jpg", "y.jpg"]


def test_discover_files_groups_siblings_and_skips_what_find_lists(tmp_path):
    names = ("IMG_1.CR2", "IMG_1.JPG", "IMG_1.JPG.xmp", "IMG_2.JPG", "._IMG_2.JPG", "x.txt")
    _touch(tmp_path, *(f"d/{name}" for name in names))
    d = tmp_path / "d"
    listing = [
        str(d),  # `find d` lists the folder itself
        str(d / "IMG_1.CR2"),
        str(d / "IMG_1.JPG.xmp"),
        str(d / "IMG_2.JPG"),
        str(d / "._IMG_2.JPG"),
        str(d / "x.txt"),
        str(d / "IMG_1.JPG"),
        str(d / "gone.jpg"),
    ]
    skipped = Counter()
    results = list(discover_files(listing, skipped=skipped))
    assert _names(results, tmp_path) == [
        ["d/IMG_1.CR2", "d/IMG_1.JPG"],
        ["d/IMG_2.JPG"],
        ("error", "d/gone.jpg"),
    ]
    assert skipped == Counter({"folder": 1, "hidden": 1, "other": 2})  # the .xmp and the .txt
    assert results[0].primary.name == "IMG_1.JPG"
    assert results[2].message == "no such file or folder"
