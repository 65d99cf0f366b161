"""Moving rejected shots, the journal, undo, and surviving a SIGKILL mid-move."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from iqs_cli import cull, fsutil, xmp
from iqs_cli.cull import CullError
from iqs_cli.journal import STATE_DIR, Journal, JournalError, journals, process_start
from iqs_cli.undo import undo
from tests.helpers import put, run_cull, tree
from tests.helpers import rejected_shot as shot

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "xmp"


def folders(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")
            if p.is_dir() and STATE_DIR not in p.relative_to(root).parts}


@pytest.fixture
def card(tmp_path) -> Path:
    """A camera card: a rejected RAW+JPEG shot with sidecars in a subfolder, a kept shot."""
    root = tmp_path / "card"
    put(root / "day1" / "IMG_1.CR2")
    put(root / "day1" / "IMG_1.JPG")
    put(root / "day1" / "IMG_1.CR2.xmp", "<x/>")
    put(root / "day1" / "IMG_1.xmp", "<lightroom/>")
    put(root / "day1" / "IMG_2.JPG")
    put(root / "day1" / "IMG_2.JPG.xmp", "<keep/>")
    return root


def test_plan_moves_every_file_and_sidecar_and_changes_nothing(card):
    before = tree(card)
    day = card / "day1"
    results = [shot(day / "IMG_1.CR2", day / "IMG_1.JPG"),
               shot(day / "IMG_2.JPG", label="accepted")]

    plan = cull.plan_moves(results, card)

    assert tree(card) == before  # a dry run changes nothing
    moves = {m.src.name: m.dst.relative_to(card).as_posix() for m in plan.moves}
    assert moves == {"IMG_1.CR2": "_rejected/day1/IMG_1.CR2",
                     "IMG_1.JPG": "_rejected/day1/IMG_1.JPG",
                     "IMG_1.CR2.xmp": "_rejected/day1/IMG_1.CR2.xmp",
                     "IMG_1.xmp": "_rejected/day1/IMG_1.xmp"}
    assert [m.sidecar for m in plan.moves] == [False, False, True, True]
    assert "day1/IMG_1.CR2 -> _rejected/day1/IMG_1.CR2" in plan.lines()
    assert plan.problems == []


def test_execute_and_undo_restore_the_tree(card):
    before, before_folders = tree(card), folders(card)
    day = card / "day1"
    plan, report = run_cull([shot(day / "IMG_1.CR2", day / "IMG_1.JPG")], card)

    assert len(report.moved) == 4 and report.failed == []
    assert sorted(p.name for p in day.iterdir()) == ["IMG_2.JPG", "IMG_2.JPG.xmp"]
    after = tree(card)
    assert after["_rejected/day1/IMG_1.CR2"] == before["day1/IMG_1.CR2"]

    undone = undo(card)
    assert tree(card) == before and folders(card) == before_folders
    assert len(undone.restored) == 4 and undone.kept == [] and undone.errors == []
    assert undo(card).nothing_to_undo  # the only run is undone already


def test_name_clash_renames_the_whole_shot_consistently(card):
    existing = put(card / "_rejected" / "day1" / "IMG_1.JPG", "an older reject")
    put(card / "_rejected" / "day1" / "IMG_1 (1).CR2.xmp", "an even older one")
    day = card / "day1"

    plan, report = run_cull([shot(day / "IMG_1.CR2", day / "IMG_1.JPG")], card)

    names = sorted(m.dst.name for m in plan.moves)
    assert names == ["IMG_1 (2).CR2", "IMG_1 (2).CR2.xmp", "IMG_1 (2).JPG", "IMG_1 (2).xmp"]
    assert all(m.renamed for m in plan.moves)
    assert existing.read_text() == "an older reject"
    assert "(renamed: name taken)" in plan.lines()[0]
    before_undo = tree(card)
    undo(card)
    assert (day / "IMG_1.CR2").exists() and existing.exists()
    assert "_rejected/day1/IMG_1 (2).JPG" in before_undo


def test_destination_inside_the_source_tree_is_refused(card, tmp_path):
    results = [shot(card / "day1" / "IMG_1.JPG")]
    with pytest.raises(CullError, match="--to must not be inside the folder being culled"):
        cull.plan_moves(results, card, card / "day1" / "rejects")
    with pytest.raises(CullError, match="--to must not be inside"):
        cull.plan_moves(results, card, card)
    assert cull.plan_moves(results, card, card / "_rejected" / "2024").moves
    outside = tmp_path / "rejects"
    plan = cull.plan_moves(results, card, outside)
    assert plan.moves[0].dst == outside.resolve() / "day1" / "IMG_1.JPG"
    put(tmp_path / "a-file")
    with pytest.raises(CullError, match="is a file"):
        cull.plan_moves(results, card, tmp_path / "a-file")


def test_stem_sidecar_shared_with_a_kept_photo_stays(tmp_path):
    root = tmp_path / "r"
    raw, tif = put(root / "IMG_5.CR2"), put(root / "IMG_5.TIF")
    shared = put(root / "IMG_5.xmp", "<shared/>")
    plan = cull.plan_moves([shot(raw), shot(tif, label="accepted")], root)
    assert [m.src for m in plan.moves] == [raw.resolve()]
    assert any("IMG_5.xmp" in p and "left in place" in p for p in plan.problems)
    assert shared.exists()


def test_vanished_file_and_taken_name_are_reported_and_the_run_goes_on(card):
    day = card / "day1"
    put(day / "IMG_3.JPG")
    results = [shot(day / "IMG_1.CR2", day / "IMG_1.JPG"), shot(day / "IMG_3.JPG")]
    plan = cull.plan_moves(results, card)
    (day / "IMG_1.CR2").unlink()  # deleted between scoring/planning and moving
    put(card / "_rejected" / "day1" / "IMG_3.JPG", "appeared meanwhile")

    with Journal.create(card) as journal:
        report = cull.execute(plan, journal)

    messages = [message for _, message in report.failed]
    assert len(messages) == 2
    assert "IMG_1.CR2: not found (moved or deleted since scoring)" in messages[0]
    assert "appeared meanwhile; not moved (nothing is ever overwritten)" in messages[1]
    assert (card / "_rejected" / "day1" / "IMG_3.JPG").read_text() == "appeared meanwhile"
    assert (day / "IMG_3.JPG").exists()
    assert {m.src.name for m in report.moved} == {"IMG_1.JPG", "IMG_1.CR2.xmp", "IMG_1.xmp"}
    undone = undo(card)
    assert undone.errors == [] and (day / "IMG_1.JPG").exists()


def test_missing_at_plan_time_is_a_problem_not_a_move(card):
    plan = cull.plan_moves([shot(card / "day1" / "gone.JPG")], card)
    assert plan.moves == [] and "not found" in plan.problems[0]


def test_names_with_spaces_and_non_ascii(tmp_path):
    root = tmp_path / "Été 2024"
    photo = put(root / "Zoë am Meer" / "IMG 0001 – ü.JPG")
    sidecar = put(root / "Zoë am Meer" / "IMG 0001 – ü.JPG.xmp", "<x/>")
    before = tree(root)
    plan, report = run_cull([shot(photo)], root)
    assert (root / "_rejected" / "Zoë am Meer" / "IMG 0001 – ü.JPG.xmp").exists()
    assert not sidecar.exists() and len(report.moved) == 2
    undo(root)
    assert tree(root) == before


def test_cross_filesystem_move_copies_verifies_and_deletes(card, monkeypatch):
    real = fsutil.rename_noreplace

    def other_device(src, dst):
        if Path(src).parent != Path(dst).parent:  # a move between folders: pretend EXDEV
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real(src, dst)

    monkeypatch.setattr(fsutil, "rename_noreplace", other_device)
    before = tree(card)
    source = card / "day1" / "IMG_1.JPG"
    mtime = source.stat().st_mtime
    plan, report = run_cull([shot(source)], card)

    moved = card / "_rejected" / "day1" / "IMG_1.JPG"
    assert report.failed == [] and not source.exists()
    assert moved.stat().st_mtime == pytest.approx(mtime)
    assert hashlib.sha256(moved.read_bytes()).hexdigest() == before["day1/IMG_1.JPG"]
    assert not [p for p in moved.parent.iterdir() if ".iqs-tmp-" in p.name]
    undo(card)
    assert tree(card) == before


def test_real_second_filesystem(card):
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == card.parent.stat().st_dev:
        pytest.skip("no second filesystem here")
    dest = shm / f"iqs-test-{os.getpid()}-{time.monotonic_ns()}"
    try:
        before = tree(card)
        plan, report = run_cull([shot(card / "day1" / "IMG_2.JPG")], card, dest)
        assert report.failed == [] and (dest / "day1" / "IMG_2.JPG.xmp").read_text() == "<keep/>"
        undo(card)
        assert tree(card) == before
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def test_sidecar_writes_are_journaled_and_undone_byte_for_byte(tmp_path):
    root = tmp_path / "r"
    kept = put(root / "keep.JPG")
    foreign = put(root / "keep.JPG.xmp", (DATA / "darktable.xmp").read_bytes())
    rejected = put(root / "bad.JPG")
    before = tree(root)

    with Journal.create(root) as journal:
        xmp.write_shot(shot(kept, label="accepted"), recorder=journal, overwrite=True)
        xmp.write_shot(shot(rejected), recorder=journal)
        cull.execute(cull.plan_moves([shot(rejected)], root), journal)

    assert xmp.read_labels(foreign)["pick"] == 3
    assert (root / "_rejected" / "bad.JPG.xmp").exists()
    undone = undo(root)
    assert tree(root) == before
    assert foreign.read_bytes() == (DATA / "darktable.xmp").read_bytes()
    assert root / "bad.JPG.xmp" in undone.removed and foreign in undone.restored


def test_undo_keeps_a_sidecar_changed_since_and_a_file_that_came_back(tmp_path):
    root = tmp_path / "r"
    photo = put(root / "a.JPG")
    with Journal.create(root) as journal:
        xmp.write_shot(shot(photo), recorder=journal)
        cull.execute(cull.plan_moves([shot(photo)], root), journal)
    put(root / "a.JPG", "a new photo with the same name")
    moved_sidecar = root / "_rejected" / "a.JPG.xmp"
    moved_sidecar.write_text(moved_sidecar.read_text() + "<!-- edited in digiKam -->")

    undone = undo(root)

    assert (root / "a.JPG").read_text() == "a new photo with the same name"
    assert (root / "_rejected" / "a.JPG").exists()
    assert any("a.JPG: a file is there again" in k for k in undone.kept)
    # The sidecar moved back (nothing was in its way) but its edit is kept, not removed.
    assert "edited in digiKam" in (root / "a.JPG.xmp").read_text()
    assert any("changed since iqs created it" in k for k in undone.kept)


def test_undo_finishes_interrupted_cross_filesystem_copies(tmp_path):
    root = tmp_path / "r"
    a, b = put(root / "a.JPG"), put(root / "b.JPG")
    before = tree(root)
    dest = root / "_rejected"
    dest.mkdir()
    with Journal.create(root) as journal:
        # killed while copying a: only a temp copy exists at the destination
        _, tmp = journal.record_move(a, dest / "a.JPG")
        shutil.copyfile(a, tmp)
        # killed after b's verified copy was in place but before the source was deleted
        journal.record_move(b, dest / "b.JPG")
        shutil.copyfile(b, dest / "b.JPG")

    undone = undo(root)
    assert undone.errors == [] and undone.kept == []
    assert tree(root) == before


def test_undo_is_a_stack_of_runs(tmp_path):
    root = tmp_path / "r"
    first, second = put(root / "1.JPG"), put(root / "2.JPG")
    before = tree(root)
    run_cull([shot(first)], root)
    time.sleep(0.01)
    run_cull([shot(second)], root)
    assert len(journals(root)) == 2

    assert undo(root).restored == [second.resolve()]
    assert (root / "_rejected" / "1.JPG").exists()
    assert undo(root).restored == [first.resolve()]
    assert tree(root) == before
    assert undo(root).nothing_to_undo


def test_a_run_that_changed_nothing_leaves_no_journal(tmp_path):
    root = tmp_path / "r"
    put(root / "ok.JPG")
    run_cull([shot(root / "ok.JPG", label="accepted")], root)
    assert journals(root) == []


def test_journal_that_cannot_be_created_stops_before_any_change(tmp_path):
    root = tmp_path / "r"
    put(root / STATE_DIR, "a file where the journal folder should be")
    with pytest.raises(JournalError, match="cannot create the undo journal"):
        Journal.create(root)


def test_undo_refuses_while_the_run_is_still_going(tmp_path):
    root = tmp_path / "r"
    put(root / "a.JPG")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        journal = Journal.create(root)
        journal.record_mkdir(root / "x")
        journal._file.close()  # as if its process were still writing
        lines = journal.path.read_text().splitlines()
        begin = json.loads(lines[0])
        begin["pid"] = sleeper.pid
        journal.path.write_text("\n".join([json.dumps(begin), *lines[1:]]) + "\n")
        with pytest.raises(JournalError, match="still going"):
            undo(root)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not undo(root).nothing_to_undo  # the process is gone: undo may proceed


def test_a_journal_cut_mid_line_still_undoes(tmp_path):
    root = tmp_path / "r"
    photo = put(root / "a.JPG")
    before = tree(root)
    plan, _ = run_cull([shot(photo)], root)
    journal = journals(root)[0]
    with open(journal, "ab") as handle:
        handle.write(b'{"op": "move", "id": 99, "src": "b.J')  # the crash cut this line
    assert undo(root).errors == []
    assert tree(root) == before


CRASH_SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from iqs_cli import cull, fsutil
    from iqs_cli.journal import Journal
    from iqs_cli.result import ShotResult

    root = Path(sys.argv[1])
    photos = sorted(p for p in root.rglob("*.JPG"))
    results = [ShotResult(path=str(p), files=[str(p)], label="rejected") for p in photos]
    plan = cull.plan_moves(results, root)
    real = fsutil.rename_noreplace

    def slow(src, dst):  # keep the run going long enough to be killed mid-way
        time.sleep(0.003)
        real(src, dst)

    fsutil.rename_noreplace = slow
    with Journal.create(root) as journal:
        cull.execute(plan, journal)
""")


def test_sigkill_mid_move_loses_nothing_and_undo_restores(tmp_path):
    root = tmp_path / "card"
    for i in range(200):
        put(root / f"day{i % 3}" / f"IMG_{i:04d}.JPG", os.urandom(64) + bytes([i % 256]))
        if i % 10 == 0:
            put(root / f"day{i % 3}" / f"IMG_{i:04d}.JPG.xmp", f"<sidecar {i}/>")
    before = tree(root)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    process = subprocess.Popen([sys.executable, "-c", CRASH_SCRIPT, str(root)], env=env)
    journal_folder = root / STATE_DIR
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            logs = list(journal_folder.glob("journal-*.jsonl")) if journal_folder.exists() else []
            if logs and logs[0].read_bytes().count(b'"op": "move"') >= 60:
                break
            assert process.poll() is None, "the run finished before it could be killed"
            time.sleep(0.002)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL

    # Every file exists exactly once, at its place or in _rejected, with the same bytes.
    after = tree(root)
    for relative, digest in before.items():
        places = [p for p in (relative, f"{cull.REJECTED_DIR}/{relative}") if p in after]
        assert len(places) == 1, (relative, places)
        assert after[places[0]] == digest
    assert len(after) == len(before)
    moved = sum(1 for p in after if p.startswith(cull.REJECTED_DIR))
    assert 0 < moved < len(before)

    undone = undo(root)
    assert undone.errors == [] and undone.kept == []
    assert tree(root) == before
    assert folders(root) == {"day0", "day1", "day2"}


def test_a_reused_pid_does_not_block_undo(tmp_path):
    root = tmp_path / "r"
    photo = put(root / "a.JPG")
    plan, _ = run_cull([shot(photo)], root)
    journal = journals(root)[0]
    entries = [json.loads(line) for line in journal.read_text().splitlines()]
    entries = [e for e in entries if e["op"] != "end"]  # as if the run was killed
    entries[0]["time"] = "2001-01-01T00:00:00+00:00"  # long before any live process started
    entries[0]["pid"] = os.getppid()  # alive, and not this process
    journal.write_text("".join(json.dumps(e) + "\n" for e in entries))
    if process_start(os.getppid()) is None:
        pytest.skip("no /proc here to tell a reused pid")
    assert undo(root).restored == [photo.resolve()]
