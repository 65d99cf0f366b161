"""iqs_cli.workflow without the command line: find, score, label, cull, as a library."""

from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.helpers import make_photo, tree
from iqs_cli import workflow, xmp
from iqs_cli.journal import FolderBusy, FolderLock
from iqs_cli.undo import undo
from iqs_cli.workflow import CullOptions, ScoreOptions, XmpOptions


@pytest.fixture
def card(tmp_path) -> Path:
    """A dark RAW+JPEG shot and a dark JPEG (rejected), a mid and a bright one."""
    root = tmp_path / "card"
    make_photo(root / "IMG_1.JPG", brightness=3)
    (root / "IMG_1.CR2").write_bytes(b"raw bytes stand-in")
    make_photo(root / "sub" / "dark.jpg", brightness=4)
    make_photo(root / "mid.jpg", brightness=130)
    make_photo(root / "bright.jpg", brightness=250)
    return root


def test_the_workflows_need_no_command_line():
    program = "import sys, iqs_cli.workflow; print(sorted({'typer', 'click', 'iqs_cli.cli'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cull_labels_moves_and_undo_puts_it_back(card, tiny_model):
    before = tree(card)
    reporter = workflow.Reporter()
    outcome = workflow.cull(card, ScoreOptions(model=str(tiny_model)), XmpOptions(),
                            CullOptions(move_rejected=True), reporter)
    assert outcome.ok and reporter.messages == []
    assert outcome.run.counts() == {"rejected": 2, "pending": 1, "accepted": 1}
    assert outcome.run.labels.created == 5  # a sidecar per photo, the RAW's too
    assert sorted(p.relative_to(outcome.dest).as_posix() for p in outcome.dest.rglob("*")) == [
        "IMG_1.CR2", "IMG_1.CR2.xmp", "IMG_1.JPG", "IMG_1.JPG.xmp", "sub", "sub/dark.jpg",
        "sub/dark.jpg.xmp"]
    assert outcome.dest == card.resolve() / "_rejected" and outcome.run.changed == [card]
    assert outcome.lines() == ["XMP: 5 written new, 0 updated",
                               f"moved 2 of 2 rejected shots (6 files) to {outcome.dest}"]
    assert xmp.read_labels(card / "bright.jpg.xmp")["pick"] == 3
    assert undo(card).errors == [] and tree(card) == before


def test_a_dry_run_plans_and_changes_nothing(card, tiny_model, tmp_path):
    before = tree(card)
    outcome = workflow.cull(card, ScoreOptions(model=str(tiny_model)), XmpOptions(style="lightroom"),
                            CullOptions(move_rejected=True, to=tmp_path / "rejects", dry_run=True))
    assert tree(card) == before and not (card / ".iqs").exists()
    assert outcome.run.labels is None and outcome.moves is None and outcome.run.changed == []
    assert len(outcome.plan) == 3  # IMG_1.JPG, IMG_1.CR2, sub/dark.jpg
    lines = outcome.lines()
    assert lines[0] == "dry run: would write labels for 4 shots (lightroom sidecars)"
    assert f"would move sub/dark.jpg -> {tmp_path / 'rejects' / 'sub' / 'dark.jpg'}" in lines


def test_a_shot_a_person_rated_stays_and_the_reporter_is_told(card, tiny_model):
    (card / "sub" / "dark.jpg.xmp").write_text(
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
        '22-rdf-syntax-ns#"><rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/'
        '1.0/" xmp:Rating="4"/></rdf:RDF></x:xmpmeta>')
    reporter = workflow.Reporter()
    outcome = workflow.cull(card, ScoreOptions(model=str(tiny_model)),
                            moving=CullOptions(move_rejected=True), reporter=reporter)
    assert ("kept", "sub/dark.jpg: rated 4 stars by you") in reporter.messages
    assert (card / "sub" / "dark.jpg").exists() and outcome.plan.kept
    assert "; 1 kept: a person rated or labelled them" in outcome.lines()[-1]


def test_a_cull_that_cannot_start_says_why(card, tiny_model, tmp_path):
    options = ScoreOptions(model=str(tiny_model))
    for folder, moving, message in [
            (tmp_path / "nowhere", CullOptions(), "does not exist"),
            (card / "mid.jpg", CullOptions(), "not a folder"),
            (card, CullOptions(to=tmp_path / "x"), "--to goes with --move-rejected"),
            (card, CullOptions(move_rejected=True, to=card / "sub"), "must not be inside")]:
        with pytest.raises(workflow.RunError, match=message):
            workflow.cull(folder, options, moving=moving)
    with pytest.raises(workflow.RunError, match="no-such-model"):
        workflow.cull(card, ScoreOptions(model="no-such-model"))
    with FolderLock(card), pytest.raises(FolderBusy):
        workflow.cull(card, options)
    assert not (card / ".iqs").exists()


class StopAfter(workflow.Reporter):
    """Ctrl-C once `n` shots are scored."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    @contextmanager
    def progress(self, total: int):
        done = []

        def advance():
            done.append(1)
            if len(done) == self.n:
                raise KeyboardInterrupt

        yield advance


def test_ctrl_c_says_where_and_which_journals_hold_the_changes(card, tiny_model):
    shots = workflow.find_shots([str(card)])
    with pytest.raises(workflow.Interrupted) as stop:
        workflow.score(shots, ScoreOptions(model=str(tiny_model)), XmpOptions(), StopAfter(2))
    assert stop.value.where == "after 2 of 4 shots" and stop.value.changed == [card.resolve()]
    assert isinstance(stop.value, KeyboardInterrupt)  # still Ctrl-C to whoever does not ask
    assert undo(card).errors == [] and not list(card.rglob("*.xmp"))
    with pytest.raises(workflow.Interrupted) as stop:
        workflow.cull(card, ScoreOptions(model=str(tiny_model)), reporter=StopAfter(1))
    assert stop.value.where == "while scoring (1 of 4 shots scored)" and not stop.value.changed
    assert not list(card.rglob("*.xmp"))


def test_find_shots_counts_what_it_skips_and_says_when_nothing_is_left(tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "a.psd").write_bytes(b"\0" * 16)
    with pytest.raises(workflow.NoPhotos, match="no photos found in .*1 .psd file skipped"):
        workflow.find_shots([str(folder)])
    with pytest.raises(workflow.RunError, match="does not exist"):
        workflow.find_shots([str(tmp_path / "missing")])
    with pytest.raises(workflow.RunError, match="cannot be mixed"):
        workflow.find_shots(["-", str(folder)])
    make_photo(folder / "b.jpg")
    reporter = workflow.Reporter()
    shots = workflow.find_shots([str(folder)], reporter=reporter)
    assert [e.primary.name for e in shots.entries] == ["b.jpg"]
    [(kind, text)] = reporter.messages
    assert kind == "skipped" and text.startswith("1 .psd file skipped")


def test_score_streams_results_and_writes_labels_only_when_asked(card, tiny_model):
    shots = workflow.find_shots([str(card)], recursive=False)
    assert len(shots.entries) == 3  # not sub/
    seen = []
    run = workflow.score(shots, ScoreOptions(model=str(tiny_model), no_cache=True),
                         on_result=seen.append)
    assert [r.path for r in seen] == [r.path for r in run.results] and len(seen) == 3
    assert run.ok and run.labels is None and not list(card.rglob("*.xmp"))
    assert run.wording  # reason token -> words, for the table

    strict = workflow.score(shots, ScoreOptions(model=str(tiny_model), reject_at=0.0))
    assert strict.counts()["rejected"] > run.counts()["rejected"]  # the options reach the verdict

    labelled = workflow.score(shots, ScoreOptions(model=str(tiny_model)),
                              XmpOptions(color_labels=True))
    assert labelled.labels.created == 4 and labelled.changed == [card.resolve()]
    assert xmp.read_labels(card / "IMG_1.CR2.xmp")["color"] == 1
    assert workflow.journal_roots(shots) == [card]
    assert undo(card).errors == [] and not list(card.rglob("*.xmp"))


def test_a_broken_photo_is_an_error_message_and_the_run_goes_on(card, tiny_model):
    (card / "broken.jpg").write_bytes(b"")
    reporter = workflow.Reporter()
    outcome = workflow.cull(card, ScoreOptions(model=str(tiny_model)), reporter=reporter)
    assert not outcome.ok and len(outcome.run.failed) == 1
    [(kind, text)] = reporter.messages
    assert kind == "error" and "broken.jpg" in text
    assert outcome.run.labels.created == 5
