"""Issue 11: a person's judgement wins, every write can be undone exactly, nothing ends up in
the wrong place — through the library and the command line."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from iqs_cli import cull, fsutil, journal, xmp
from iqs_cli.card import load_card
from iqs_cli.cli import app
from iqs_cli.journal import FolderLock, Journal, JournalError, journals, read_journal
from iqs_cli.result import ShotResult
from iqs_cli.undo import undo
from iqs_cli.verdict import STARS_BY_LABEL, decide
from tests.helpers import make_photo, put, rejected_shot, run_cull, tree

runner = CliRunner()
REPO = Path(__file__).resolve().parent.parent

PERSON_RATED = (
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
    'xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmlns:digiKam="http://www.digikam.org/ns/1.0/" '
    '{attrs}/></rdf:RDF></x:xmpmeta>')


@contextmanager
def small_disk(where: Path, size: str, read_only: bool = False):
    """A tmpfs of `size` mounted at `where` for the test (skip where mounting is not allowed)."""
    where.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
                          capture_output=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN)")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture
def shoot(tmp_path) -> Path:
    """Two dark failures (one RAW+JPEG pair), a mid and a bright shot (the tiny model rejects
    the dark ones)."""
    root = tmp_path / "trip"
    make_photo(root / "day1" / "IMG_0001.JPG", brightness=3)
    (root / "day1" / "IMG_0001.CR2").write_bytes(b"raw bytes stand-in")
    make_photo(root / "day1" / "IMG_0002.JPG", brightness=130)
    make_photo(root / "day2" / "dark.jpg", brightness=4)
    make_photo(root / "day2" / "bright.jpg", brightness=250)
    return root


# ---------------------------------------------------------------------------------------------
# A person's judgement wins


def test_a_shot_a_person_rated_is_never_moved_and_the_summary_says_why(shoot, tiny_model):
    sidecar = shoot / "day2" / "dark.jpg.xmp"
    sidecar.write_text(PERSON_RATED.format(attrs='xmp:Rating="5"'))
    dry = runner.invoke(app, ["cull", str(shoot), "--move-rejected", "--dry-run",
                              "--model", str(tiny_model)])
    assert dry.exit_code == 0, dry.output
    assert "kept: day2/dark.jpg: rated 5 stars by you" in dry.stderr
    assert "would move day2/dark.jpg" not in dry.stdout

    result = runner.invoke(app, ["cull", str(shoot), "--move-rejected", "--model", str(tiny_model)])
    assert result.exit_code == 0, result.output
    assert (shoot / "day2" / "dark.jpg").exists() and sidecar.exists()
    assert (shoot / "_rejected" / "day1" / "IMG_0001.CR2").exists()
    assert "kept: day2/dark.jpg: rated 5 stars by you" in result.stderr
    assert "moved 1 of 2 rejected shots (4 files)" in result.stdout
    assert "1 kept: a person rated or labelled them" in result.stdout
    assert 'xmp:Rating="5"' in sidecar.read_text()  # their rating too

    runner.invoke(app, ["undo", str(shoot)])
    forced = runner.invoke(app, ["cull", str(shoot), "--move-rejected", "--overwrite",
                                 "--model", str(tiny_model)])
    assert forced.exit_code == 0, forced.output
    assert (shoot / "_rejected" / "day2" / "dark.jpg").exists()


@pytest.mark.parametrize("attrs, why", [
    ('digiKam:PickLabel="3"', "pick label Accepted set by you"),
    ('digiKam:ColorLabel="5"', "color label blue set by you"),
    ('xmp:Label="Purple"', "color label Purple set by you"),
    ('xmp:Rating="1"', "rated 1 star by you"),
])
def test_every_kind_of_label_a_person_sets_keeps_the_shot(tmp_path, attrs, why):
    photo = put(tmp_path / "r" / "a.JPG")
    put(tmp_path / "r" / "a.xmp", PERSON_RATED.format(attrs=attrs))  # the Lightroom name
    plan = cull.plan_moves([rejected_shot(photo)], tmp_path / "r")
    assert plan.moves == [] and plan.kept_lines() == [f"a.JPG: {why}"]
    assert len(cull.plan_moves([rejected_shot(photo)], tmp_path / "r", keep_judged=False).moves) == 2


def test_labels_iqs_wrote_itself_or_unset_do_not_keep_a_shot(tmp_path):
    root = tmp_path / "r"
    photo = put(root / "a.JPG")
    put(root / "b.JPG.xmp", PERSON_RATED.format(attrs='xmp:Rating="0" digiKam:PickLabel="0"'))
    b = put(root / "b.JPG")
    # An earlier iqs run labelled a.JPG pending (3 stars); it is rejected now.
    xmp.write_labels(photo, ShotResult(path=str(photo), label="pending", stars=3, mos=50.0))
    plan = cull.plan_moves([rejected_shot(photo), rejected_shot(b)], root)
    assert plan.kept == [] and len(plan.moves) == 4


def test_stars_agree_with_labels(tiny_model):
    card = load_card(tiny_model)
    probs = {"rejected": 0.1, "pending": 0.8, "accepted": 0.1}
    assert decide(probs, 99.0, {}, card).stars == STARS_BY_LABEL["pending"][1] == 3
    assert decide(probs, 1.0, {}, card).stars == 2
    good = {"rejected": 0.05, "pending": 0.1, "accepted": 0.85}
    assert decide(good, 1.0, {}, card).stars == 3
    assert decide(good, 99.0, {}, card).stars == 5
    bad = {"rejected": 0.9, "pending": 0.05, "accepted": 0.05}
    assert decide(bad, 99.0, {}, card).stars == 1


# ---------------------------------------------------------------------------------------------
# Every write can be undone, exactly


@pytest.mark.parametrize("extra", [[], ["--in-file"]])
def test_score_write_xmp_is_undone_exactly(shoot, tiny_model, extra):
    existing = shoot / "day1" / "IMG_0002.JPG.xmp"
    existing.write_text(PERSON_RATED.format(attrs='xmp:Label="Blue"'))
    before = tree(shoot)
    result = runner.invoke(app, ["score", str(shoot), "--write-xmp", "-f", "jsonl",
                                 "--model", str(tiny_model), *extra])
    assert result.exit_code == 0, result.output
    assert tree(shoot) != before
    assert f"undo with: iqs undo {shoot}" in result.stderr
    undone = runner.invoke(app, ["undo", str(shoot)])
    assert undone.exit_code == 0, undone.output
    assert tree(shoot) == before
    assert "nothing to undo" in runner.invoke(app, ["undo", str(shoot)]).stdout


def test_score_write_xmp_on_files_journals_in_their_folder(shoot, tiny_model):
    before = tree(shoot)
    photos = [str(shoot / "day1" / "IMG_0002.JPG"), str(shoot / "day2" / "bright.jpg")]
    result = runner.invoke(app, ["score", *photos, "--write-xmp", "-f", "jsonl",
                                 "--model", str(tiny_model)])
    assert result.exit_code == 0, result.output
    assert f"undo with: iqs undo {shoot}" in result.stderr  # the folder holding both
    assert runner.invoke(app, ["undo", str(shoot)]).exit_code == 0
    assert tree(shoot) == before


def test_journal_lines_are_whole_or_absent_on_a_short_write(tmp_path, monkeypatch):
    root = tmp_path / "r"
    photos = [put(root / f"{i}.JPG") for i in range(3)]
    before = tree(root)
    plan = cull.plan_moves([rejected_shot(p) for p in photos], root)
    real_write = os.write
    calls = {"n": 0}

    def nearly_full(fd, data):
        calls["n"] += 1
        if calls["n"] == 6:  # the disk takes half a line, then no more
            real_write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        if calls["n"] == 4:
            return real_write(fd, data[:5])  # a short write that must be continued
        return real_write(fd, data)

    run = Journal.create(root)
    monkeypatch.setattr(journal.os, "write", nearly_full)
    with pytest.raises(JournalError, match="No space left"):
        cull.execute(plan, run)
    monkeypatch.undo()
    run.close()
    for line in run.path.read_bytes().splitlines():
        json.loads(line)  # every line whole
    assert run.path.read_bytes().endswith(b"\n")
    report = undo(root)
    assert report.errors == [] and tree(root) == before
    assert read_journal(run.path)[-1]["op"] == "undone"


def test_a_failed_or_empty_journal_never_blocks_undo(tmp_path, monkeypatch):
    root = tmp_path / "r"
    photo = put(root / "a.JPG")
    before = tree(root)
    run_cull([rejected_shot(photo)], root)

    def no_space(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal.os, "write", no_space)
    with pytest.raises(JournalError):
        Journal.create(root)
    monkeypatch.undo()
    assert len(journals(root)) == 1  # the failed one left nothing
    (root / journal.STATE_DIR / "journal-29990101T000000.000000Z-1.jsonl").write_bytes(b"")
    assert undo(root).errors == [] and tree(root) == before


UNDO_SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from iqs_cli import fsutil
    from iqs_cli.undo import undo

    real = fsutil.move_file
    def slow(*args, **kwargs):  # keep the undo going long enough to be killed mid-way
        time.sleep(0.01)
        return real(*args, **kwargs)
    fsutil.move_file = slow
    import iqs_cli.undo
    iqs_cli.undo.move_file = slow
    print("start", flush=True)
    undo(Path(sys.argv[1]))
""")


def test_an_interrupted_undo_can_be_run_again_to_the_end(tmp_path):
    root = tmp_path / "card"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for attempt in range(8):
        for p in list(root.rglob("*"))[::-1] if root.exists() else []:
            p.unlink() if not p.is_dir() else p.rmdir()
        photos = [make_photo(root / f"d{i % 2}" / f"IMG_{i}.JPG", size=(8, 8), seed=i)
                  for i in range(12)]
        for photo in photos[::3]:
            put(photo.with_name(photo.name + ".xmp"), PERSON_RATED.format(attrs=""))
        before = tree(root)
        results = [rejected_shot(p) for p in photos]
        with Journal.create(root) as run:
            for result in results:  # sidecars written (created or changed), then moved
                xmp.write_shot(result, recorder=run)
            cull.execute(cull.plan_moves(results, root), run)
        process = subprocess.Popen([sys.executable, "-c", UNDO_SCRIPT, str(root)], env=env,
                                   stdout=subprocess.PIPE)
        process.stdout.readline()
        time.sleep(0.02 + 0.03 * attempt)
        process.send_signal(signal.SIGKILL)
        process.wait()
        report = undo(root)
        assert report.errors == [], (attempt, report.errors)
        assert tree(root) == before, attempt
        assert undo(root).nothing_to_undo


def test_a_killed_cross_filesystem_undo_leaves_no_second_copy(tmp_path, monkeypatch):
    root, dest = tmp_path / "r", tmp_path / "elsewhere"
    photo = put(root / "a.JPG")
    before = tree(root)
    real = fsutil.rename_noreplace

    def other_device(src, dst):
        if Path(src).parent != Path(dst).parent:
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real(src, dst)

    monkeypatch.setattr(fsutil, "rename_noreplace", other_device)
    run_cull([rejected_shot(photo)], root, dest)
    real_unlink = os.unlink

    def killed_before_deleting(path, *args, **kwargs):
        if Path(path) == dest / "a.JPG":
            raise KeyboardInterrupt  # as if killed between the copy back and the delete
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(fsutil.os, "unlink", killed_before_deleting)
    with pytest.raises(KeyboardInterrupt):
        undo(root)
    monkeypatch.setattr(fsutil.os, "unlink", real_unlink)
    assert (dest / "a.JPG").exists() and photo.exists()  # both, for now
    report = undo(root)
    assert report.errors == [] and report.kept == []
    assert not (dest / "a.JPG").exists() and tree(root) == before


def test_temporary_sidecar_of_a_killed_write_is_removed_by_undo(tmp_path):
    root = tmp_path / "r"
    photo = put(root / ("x" * 240 + ".JPG"))
    with Journal.create(root) as run:
        sidecar = xmp.sidecar_path(photo)
        run.before_write(sidecar, existed=False)
        leftover = fsutil.temp_path(sidecar, "1a2b3c4d")  # what a SIGKILL mid-write leaves
        leftover.write_bytes(b"half a sidecar")
    assert len(leftover.name.encode()) <= 255
    assert undo(root).errors == []
    assert not leftover.exists() and sorted(p.name for p in root.iterdir()) == [".iqs", photo.name]


def test_two_runs_on_one_folder_do_not_overlap(shoot, tiny_model):
    with FolderLock(shoot):
        busy = runner.invoke(app, ["cull", str(shoot), "--model", str(tiny_model)])
        assert busy.exit_code == 3 and "another iqs run is changing" in busy.stderr
        assert runner.invoke(app, ["undo", str(shoot)]).exit_code == 3
    with FolderLock(shoot / "day1"):  # a run below it holds a part of the tree
        assert runner.invoke(app, ["cull", str(shoot), "--model", str(tiny_model)]).exit_code == 3
    with FolderLock(shoot.parent):  # ... or a run above it
        assert runner.invoke(app, ["cull", str(shoot), "--model", str(tiny_model)]).exit_code == 3
    with FolderLock(shoot / "day1"):  # a sibling folder is free
        assert runner.invoke(app, ["cull", str(shoot / "day2"), "--model",
                                   str(tiny_model)]).exit_code == 0


CONCURRENT = textwrap.dedent("""
    import sys
    from typer.testing import CliRunner
    from iqs_cli.cli import app
    result = CliRunner().invoke(app, ["cull", sys.argv[1], "--model", sys.argv[2], "-q",
                                      "--no-cache"])
    print(result.exit_code)
""")


def test_two_culls_at_once_never_write_sidecars_twice(tmp_path, tiny_model):
    root = tmp_path / "r"
    for i in range(30):
        make_photo(root / f"IMG_{i}.JPG", size=(8, 8), seed=i)
    before = tree(root)
    env = dict(os.environ, PYTHONPATH=f"{REPO}:{REPO / 'tests'}")
    runs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, str(root), str(tiny_model)],
                             env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    codes = sorted(int(p.communicate()[0].split()[-1]) for p in runs)
    assert codes in ([0, 0], [0, 3])
    while not undo(root).nothing_to_undo:
        pass
    assert tree(root) == before


def test_a_shot_moves_whole_or_not_at_all_when_the_destination_fills_up(tmp_path):
    root = tmp_path / "r"
    small = put(root / "IMG_1.CR3", os.urandom(8 * 1024))
    big = put(root / "IMG_1.JPG", os.urandom(400 * 1024))
    other = put(root / "IMG_2.JPG", os.urandom(4 * 1024))
    before = tree(root)
    with small_disk(tmp_path / "full", "256k") as dest:
        plan, report = run_cull([rejected_shot(small, big), rejected_shot(other)], root, dest)
        assert [m.src.name for m, _ in report.failed] == ["IMG_1.JPG"]
        assert "No space left" in report.failed[0][1]
        assert [m.src.name for m in report.returned] == ["IMG_1.CR3"]
        assert small.exists() and big.exists() and not other.exists()
        assert sorted(p.name for p in dest.iterdir()) == ["IMG_2.JPG"]
        assert report.unmoved_shots() == 1
        assert undo(root).errors == [] and tree(root) == before


def test_journal_on_a_full_disk_stops_cleanly_and_undo_restores(tmp_path):
    with small_disk(tmp_path / "disk", "1m") as disk:
        root = disk / "card"
        photos = [put(root / f"IMG_{i:03d}.JPG", b"x") for i in range(40)]
        before = tree(root)
        filler = disk / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        plan = cull.plan_moves([rejected_shot(p) for p in photos], root)
        os.truncate(filler, os.path.getsize(filler) - 4096)  # room for a page of journal
        with pytest.raises(JournalError):
            with Journal.create(root) as run:
                cull.execute(plan, run)
        for line in read_journal(run.path)[1:]:
            assert line["op"] in ("mkdir", "move", "done", "end")
        filler.unlink()
        report = undo(root)
        assert report.errors == [] and tree(root) == before


def test_links_stay_links_after_a_cross_filesystem_move_and_undo(tmp_path):
    root = tmp_path / "r"
    photo = put(root / "a.JPG", os.urandom(1000))
    os.link(photo, root / "keep" / "same.JPG") if (root / "keep").mkdir() is None else None
    os.symlink("a.JPG", root / "alias.JPG")
    before = tree(root)
    with small_disk(tmp_path / "other", "1m") as dest:
        plan, report = run_cull([rejected_shot(photo), rejected_shot(root / "alias.JPG")], root, dest)
        assert report.failed == []
        assert (dest / "alias.JPG").is_symlink() and os.readlink(dest / "alias.JPG") == "a.JPG"
        assert undo(root).errors == []
    assert tree(root) == before
    assert (root / "alias.JPG").is_symlink()
    assert os.stat(photo).st_ino == os.stat(root / "keep" / "same.JPG").st_ino


# ---------------------------------------------------------------------------------------------
# Nothing in the wrong place


def test_names_differing_only_in_case_keep_their_own_sidecars(tmp_path):
    root = tmp_path / "r"
    bad, good = put(root / "IMG_1.JPG"), put(root / "IMG_1.jpg")
    put(root / "IMG_1.JPG.xmp", "<bad/>")
    put(root / "IMG_1.jpg.xmp", "<keywords of the kept one/>")
    plan, report = run_cull([rejected_shot(bad)], root)
    assert sorted(m.src.name for m in report.moved) == ["IMG_1.JPG", "IMG_1.JPG.xmp"]
    assert (root / "IMG_1.jpg.xmp").read_text() == "<keywords of the kept one/>"
    assert good.exists()


def test_a_sidecar_named_in_another_case_still_travels_with_its_photo(tmp_path):
    root = tmp_path / "r"
    photo = put(root / "IMG_1.JPG")
    put(root / "IMG_1.jpg.xmp", "<only one photo could own me/>")
    plan, report = run_cull([rejected_shot(photo)], root)
    assert sorted(m.src.name for m in report.moved) == ["IMG_1.JPG", "IMG_1.jpg.xmp"]


def test_odd_names_are_culled_and_undone(tmp_path, tiny_model):
    root = tmp_path / "r"
    long_name = "é" * 60 + "x" * 120 + ".jpg"  # 244 bytes; its sidecar 248
    make_photo(root / long_name, brightness=3)
    raw_name = os.fsdecode(b"bad-\xff-name.jpg")
    make_photo(root / raw_name, brightness=3)
    put(root / (long_name + ".xmp"), PERSON_RATED.format(attrs='xmp:Label=""'))
    before = tree(root)
    result = runner.invoke(app, ["cull", str(root), "--move-rejected", "--model", str(tiny_model)])
    assert result.exit_code == 0, result.output
    assert (root / "_rejected" / long_name).exists() and (root / "_rejected" / raw_name).exists()
    assert runner.invoke(app, ["undo", str(root)]).exit_code == 0
    assert tree(root) == before


def test_a_read_only_folder_is_found_out_before_scoring(tmp_path, tiny_model):
    with small_disk(tmp_path / "ro", "64k", read_only=True) as folder:
        assert fsutil.cannot_write_in(folder) == "read-only file system"
        result = runner.invoke(app, ["cull", str(folder), "--model", str(tiny_model)])
        assert result.exit_code == 2 and "cannot write in" in result.stderr
        assert "read-only file system" in result.stderr and "scoring" not in result.stderr


def test_score_write_xmp_names_a_read_only_folder_once(tmp_path, tiny_model):
    root = tmp_path / "r"
    make_photo(root / "a.jpg")
    with small_disk(root / "ro", "1m") as folder:
        for i in range(5):
            make_photo(folder / f"{i}.jpg", seed=i)
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        result = runner.invoke(app, ["score", str(root), "--write-xmp", "-f", "jsonl",
                                     "--model", str(tiny_model)])
    assert result.exit_code == 1
    assert result.stderr.count("error: cannot write in") == 1
    assert "5 in 1 folder iqs cannot write in" in result.stderr
    assert (root / "a.jpg.xmp").exists()


def test_ctrl_c_says_where_it_stopped_and_how_to_undo(shoot, tiny_model, monkeypatch):
    from iqs_cli import scoring

    real_score = scoring.Scorer.score

    def stopped_while_scoring(self, entries):
        for n, result in enumerate(real_score(self, entries)):
            if n == 1:
                raise KeyboardInterrupt
            yield result

    monkeypatch.setattr(scoring.Scorer, "score", stopped_while_scoring)
    before = tree(shoot)
    result = runner.invoke(app, ["cull", str(shoot), "--model", str(tiny_model), "--no-cache"])
    assert result.exit_code == 130
    assert "interrupted while scoring (1 of 4 shots scored); nothing was changed" in result.stderr
    assert tree(shoot) == before and not (shoot / ".iqs").exists()
    monkeypatch.undo()

    real_write = xmp.write_shot
    calls = []

    def stopped_while_writing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_write(*args, **kwargs)

    monkeypatch.setattr(xmp, "write_shot", stopped_while_writing)
    result = runner.invoke(app, ["cull", str(shoot), "--model", str(tiny_model)])
    assert result.exit_code == 130
    assert "interrupted after 2 changes" in result.stderr  # the RAW+JPEG shot's two sidecars
    assert f"undo with: iqs undo {shoot}" in result.stderr
    monkeypatch.undo()
    assert runner.invoke(app, ["undo", str(shoot)]).exit_code == 0
    assert tree(shoot) == before


def test_nothing_to_score_says_so_and_leaves_nothing_behind(tmp_path, tiny_model):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a photo")
    for command in (["score", str(empty)], ["cull", str(empty), "--move-rejected"]):
        result = runner.invoke(app, [*command, "--model", str(tiny_model)])
        assert result.exit_code == 1, result.output
        assert f"no photos found in {empty}" in result.stderr
    assert sorted(p.name for p in empty.iterdir()) == ["notes.txt"]  # no .iqs/


def test_a_cull_that_changes_nothing_leaves_no_state_folder(tmp_path, tiny_model, monkeypatch):
    root = tmp_path / "r"
    make_photo(root / "a.jpg", brightness=200)
    monkeypatch.setattr(xmp, "write_shot", lambda *a, **k: [])  # as if every label were there
    result = runner.invoke(app, ["cull", str(root), "--model", str(tiny_model)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in root.iterdir()) == ["a.jpg"]


def test_a_folder_of_unreadable_formats_says_what_it_skipped(tmp_path, tiny_model):
    folder = tmp_path / "exports"
    for name in ("a.jxl", "b.jxl", "c.psd"):
        put(folder / name, b"\0" * 16)
    result = runner.invoke(app, ["score", str(folder), "--model", str(tiny_model)])
    assert result.exit_code == 1
    assert "no photos found in" in result.stderr
    assert "2 .jxl files and 1 .psd file skipped" in " ".join(result.stderr.split())
    make_photo(folder / "d.jpg")
    result = runner.invoke(app, ["score", str(folder), "-f", "jsonl", "--model", str(tiny_model)])
    assert result.exit_code == 0 and "note: 2 .jxl files and 1 .psd file skipped" in " ".join(
        result.stderr.split())


def test_a_fifo_named_like_a_sidecar_stays_and_the_cull_goes_on(tmp_path, tiny_model):
    root = tmp_path / "r"
    make_photo(root / "a.jpg", brightness=3)
    make_photo(root / "b.jpg", brightness=3)
    os.mkfifo(root / "a.jpg.xmp")
    os.symlink("/dev/zero", root / "b.jpg.xmp")
    result = runner.invoke(app, ["cull", str(root), "--move-rejected", "--to",
                                 str(tmp_path / "elsewhere"), "--model", str(tiny_model)])
    assert result.exit_code == 1
    assert "a.jpg.xmp: not a regular file" in " ".join(result.stderr.split())
    assert (root / "a.jpg.xmp").exists() and (tmp_path / "elsewhere" / "a.jpg").exists()
    assert (tmp_path / "elsewhere" / "b.jpg.xmp").is_symlink()  # moved as the link it is
