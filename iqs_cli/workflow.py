"""What `iqs score` and `iqs cull` do, as functions that work without the command line.

`find_shots` turns folders and photos into shots, `score` scores them (and, asked, writes their
XMP labels, every change journaled first), `cull` scores a folder, labels it and moves its
rejected shots away under the folder's lock. Options come in as dataclasses; what happens on
the way goes to a `Reporter` (messages and progress); what was done comes back as a
`ScoringRun` or `CullOutcome`. Requests that cannot run raise `RunError` (the message says what
to change), an empty selection `NoPhotos`, Ctrl-C `Interrupted`, a locked folder
`journal.FolderBusy`. The command line (cli.py) only parses options and prints.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

from iqs_cli import html_report, xmp
from iqs_cli.bursts import DEFAULT_GAP, BurstOptions, FolderGrouper
from iqs_cli.cache import ResultCache
from iqs_cli.card import CardError, load_card
from iqs_cli.cull import CullError, CullPlan, MoveReport, check_destination, execute, plan_moves
from iqs_cli.discover import (Shot, discover, discover_files, is_photo_name, paths_from_stdin,
                              skipped_summary)
from iqs_cli.engine import EngineError, ModelSession, default_batch
from iqs_cli.fsutil import cannot_write_in, describe_os_error
from iqs_cli.journal import FolderBusy, FolderLock, Journal, JournalError, RootJournals
from iqs_cli.report import display_path, plural
from iqs_cli.result import ShotResult
from iqs_cli.scoring import Scorer
from iqs_cli.verdict import Thresholds, reason_wording


class RunError(Exception):
    """The run cannot start as asked (the message says what to change)."""


class NoPhotos(Exception):
    """Nothing to score where the run looked (the message says where, and what it skipped)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C: `where` the run stopped; `changed`, the folders whose journal can undo it."""

    def __init__(self, where: str, changed: list[Path] | None = None):
        super().__init__(where)
        self.where, self.changed = where, changed or []


# ---------------------------------------------------------------------------------------------
# Options and messages


@dataclass(frozen=True)
class ScoreOptions:
    """How to find and score shots (what `score` and `cull` share)."""

    model: Optional[str] = None  # a shipped model's name or a .onnx file (None: the default)
    device: str = "cpu"  # cpu, cuda or auto
    batch_size: Optional[int] = None  # None: the engine's default for the device
    workers: Optional[int] = None  # decoding threads (None: one per core)
    reject_at: Optional[float] = None  # None: the card's thresholds
    accept_at: Optional[float] = None
    focus_check: str = "rejected"  # scoring.FOCUS_MODES
    recursive: bool = True
    no_cache: bool = False
    # Bursts (iqs_cli/bursts.py): group each folder's shots of one moment, keep the best frame.
    no_bursts: bool = False
    burst_gap: float = DEFAULT_GAP  # seconds between frames of one burst
    similar_only: bool = False  # group by look alone, whatever the time between frames
    reject_duplicates: bool = False  # frames other than a burst's best are rejected


@dataclass(frozen=True)
class XmpOptions:
    """How labels are written (xmp.write_shot)."""

    style: str = "digikam"  # xmp.SIDECAR_STYLES
    in_file: bool = False
    color_labels: bool = False
    overwrite: bool = False  # also replace labels a person set (and move shots they judged)


@dataclass(frozen=True)
class CullOptions:
    move_rejected: bool = False
    to: Optional[Path] = None  # where rejected shots go (None: FOLDER/_rejected)
    dry_run: bool = False  # score and plan; change nothing


class Reporter:
    """Where a workflow tells what happens while it runs. This one keeps the messages, as
    (kind, text), and shows no progress; the command line prints them.

    Kinds: "stop" (something stops the rest of the run's writing), "error" (a photo, file or
    folder failed; the run goes on), "warning" (the run goes on without something, e.g. the
    cache), "note" (a file left where it is), "kept" (a shot a person's labels keep in place),
    "skipped" (photos in formats iqs cannot read, counted)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []

    def message(self, kind: str, text: str) -> None:
        self.messages.append((kind, text))

    @contextmanager
    def progress(self, total: int) -> Iterator[Callable[[], None]]:
        """Around scoring `total` shots; the function it gives is called after each one."""
        yield lambda: None


# ---------------------------------------------------------------------------------------------
# Finding and scoring


@dataclass
class Shots:
    given: list[str]  # the folders and photos asked for ("-": paths read from stdin)
    entries: list  # discover.Shot or DiscoveryError, in order


def check_folder(folder: Path) -> None:
    if not folder.exists():
        raise RunError(f"{folder}: does not exist")
    if not folder.is_dir():
        raise RunError(f"{folder}: not a folder (give the folder that holds the photos)")


def find_shots(paths: list[str], recursive: bool = True, skip_dirs=(),
               reporter: Reporter | None = None) -> Shots:
    """The shots (and discovery errors) under `paths` ("-": paths read from stdin). Photos in
    formats iqs cannot read are counted and named in one message; NoPhotos when none is left."""
    if not paths:
        raise RunError("give at least one folder or photo, or - to read paths from stdin")
    missing = [p for p in paths if p != "-" and not os.path.lexists(p)]
    if missing:
        raise RunError(f"{missing[0]}: does not exist" + (f" (and {len(missing) - 1} more given)"
                                                          if len(missing) > 1 else ""))
    skipped: Counter = Counter()
    if paths == ["-"]:
        entries = list(discover_files(paths_from_stdin(sys.stdin.buffer), skipped=skipped))
    elif "-" in paths:
        raise RunError("'-' (read paths from stdin) cannot be mixed with other paths")
    else:
        entries = list(discover(paths, recursive=recursive, skip_dirs=list(skip_dirs),
                                skipped=skipped))
    summary = skipped_summary(skipped)
    if not entries:
        where = "stdin" if paths == ["-"] else ", ".join(paths)
        raise NoPhotos(f"no photos found in {where}" + (f"; {summary}" if summary else ""))
    if summary:
        (reporter or Reporter()).message("skipped", summary)
    return Shots(list(paths), entries)


@dataclass
class XmpTally:
    """The labels a run wrote, and why some were not."""

    reporter: Reporter = field(default_factory=Reporter)
    created: int = 0
    updated: int = 0
    human_kept: int = 0
    failed: int = 0
    # Folders iqs cannot write in -> photos left without labels there (told once per folder).
    unwritable: dict[Path, int] = field(default_factory=dict)
    stopped: str | None = None  # why writing stopped for the rest of the run (journal trouble)
    # Lightroom-style runs that merged into an existing photo.ext.xmp instead of a new photo.xmp.
    merged_other_name: int = 0

    def write(self, result: ShotResult, options: XmpOptions, recorder=None) -> None:
        if not result.ok:
            return
        if self.stopped is not None:
            self.failed += 1
            return
        folder = Path(result.path).parent
        if folder in self.unwritable or self._cannot_write(folder):
            self.unwritable[folder] += 1
            self.failed += 1
            return
        try:
            outcomes = xmp.write_shot(result, style=options.style, in_file=options.in_file,
                                      color_labels=options.color_labels,
                                      overwrite=options.overwrite, recorder=recorder)
        except (JournalError, FolderBusy) as exc:
            self.stopped = str(exc)
            self.failed += 1
            self.reporter.message("stop", f"{exc}; no more labels are written in this run")
            return
        for outcome in outcomes:
            if not outcome.ok:
                self.failed += 1
                self.reporter.message("error", str(outcome.error))
                continue
            self.created += outcome.created
            self.updated += not outcome.created
            self.human_kept += outcome.human_kept
            if not outcome.in_file and outcome.target != xmp.sidecar_path(outcome.photo,
                                                                            options.style):
                self.merged_other_name += 1

    def _cannot_write(self, folder: Path) -> bool:
        reason = cannot_write_in(folder)
        if reason is None:
            return False
        self.unwritable[folder] = 0
        self.reporter.message("error", f"cannot write in {display_path(str(folder))} ({reason}): "
                              "its photos get no XMP labels — make it writable, then re-run")
        return True

    def line(self) -> str:
        text = f"XMP: {self.created} written new, {self.updated} updated"
        if self.human_kept:
            text += f", {self.human_kept} kept labels a person set (--overwrite replaces them)"
        if self.merged_other_name:
            text += (f", {self.merged_other_name} into the photo.ext.xmp sidecar already there "
                     "(a second sidecar would hide it in digiKam or darktable)")
        if self.failed:
            text += f", {self.failed} failed"
        if self.unwritable:
            text += (f" ({sum(self.unwritable.values())} in {len(self.unwritable)} folder"
                     f"{'s' if len(self.unwritable) != 1 else ''} iqs cannot write in)")
        return text


@dataclass
class ScoringRun:
    results: list[ShotResult]
    seconds: float
    wording: dict[str, str] = field(default_factory=dict)  # reason token -> text for people
    labels: XmpTally | None = None  # the XMP labels written (None: none were asked for)
    changed: list[Path] = field(default_factory=list)  # folders `undo` can put back

    @property
    def failed(self) -> list[ShotResult]:
        return [r for r in self.results if not r.ok]

    @property
    def ok(self) -> bool:
        """Every shot scored and every label asked for written."""
        return not self.failed and not (self.labels is not None and self.labels.failed)

    def counts(self) -> Counter:
        return Counter(r.label for r in self.results if r.ok)


def _warn_about(cache: ResultCache | None, reporter: Reporter) -> None:
    """A cache problem, told once: the run goes on without the cache."""
    warning = cache.take_warning() if cache is not None else None
    if warning:
        reporter.message("warning", warning)


def _score(entries: list, options: ScoreOptions, reporter: Reporter,
           results: list[ShotResult], on_result=None) -> ScoringRun:
    """Score `entries`; each result goes to `results` (so a caller still has them after an
    interruption) and to `on_result`."""
    try:
        session = ModelSession(load_card(options.model), device=options.device)
    except (CardError, EngineError) as exc:
        raise RunError(str(exc)) from exc
    if session.head is not None and options.focus_check == "all":
        reporter.message("note", f"{session.card.name} is a personal model: it judges the whole "
                         "frame, as you did, and takes no second look (--focus-check ignored)")
    cache = None if options.no_cache else ResultCache(model_sha256=session.cache_key)
    _warn_about(cache, reporter)
    scorer = Scorer(session, Thresholds(reject_at=options.reject_at, accept_at=options.accept_at),
                    cache, batch_size=options.batch_size or default_batch(session),
                    workers=options.workers, focus=options.focus_check)
    # Bursts are found per folder once its shots are scored: results come on a folder at a time.
    grouper = FolderGrouper(BurstOptions(options.burst_gap, options.similar_only,
                                         options.reject_duplicates, options.workers)
                            ) if not options.no_bursts else None

    def hand_on(ready: list[ShotResult]) -> None:
        for result in ready:
            results.append(result)
            if not result.ok:
                reporter.message("error", f"{display_path(result.path)}: {result.error}")
            if on_result is not None:
                on_result(result)

    started = time.perf_counter()
    try:
        with reporter.progress(len(entries)) as advance:
            for result in scorer.score(entries):
                hand_on(grouper.feed(result) if grouper is not None else [result])
                advance()
            if grouper is not None:
                hand_on(grouper.flush())
    except KeyboardInterrupt:
        if grouper is not None:  # the unfinished folder's shots, as scored: a re-run groups them
            hand_on(grouper.release())
        raise
    finally:
        if grouper is not None:
            grouper.close()
        if cache is not None:
            _warn_about(cache, reporter)
            cache.close()
    return ScoringRun(results, time.perf_counter() - started, reason_wording(session.card))


def journal_roots(shots: Shots) -> list[Path]:
    """Where `score` with labels keeps its journals: each folder given, and for photos given
    one by one (or on stdin) the folder that holds them all, when iqs can write there (else
    each photo's own folder)."""
    folders = [Path(os.path.abspath(p)) for p in shots.given if p != "-" and os.path.isdir(p)]
    loose = sorted({str(e.primary.parent) for e in shots.entries if isinstance(e, Shot)
                    and not any(f in e.primary.parents for f in folders)})
    if loose:
        common = os.path.commonpath(loose)
        if len(loose) == 1 or cannot_write_in(Path(common)) is None:
            loose = [common]
    return folders + [Path(p) for p in loose]


def score(shots: Shots, options: ScoreOptions = ScoreOptions(), labels: XmpOptions | None = None,
          reporter: Reporter | None = None, on_result=None) -> ScoringRun:
    """Score `shots`; `on_result` sees each result as it comes. With `labels`, each shot's XMP
    labels are written as it is scored, every change journaled first in the journal of the
    root that holds it (journal_roots): `undo.undo(root)` takes them back."""
    reporter = reporter or Reporter()
    journals = RootJournals(journal_roots(shots)) if labels is not None else None
    tally = XmpTally(reporter)
    results: list[ShotResult] = []

    def each(result: ShotResult) -> None:
        if on_result is not None:
            on_result(result)
        if journals is not None:
            tally.write(result, labels, recorder=journals)

    try:
        run = _score(shots.entries, options, reporter, results, each)
    except KeyboardInterrupt:
        raise Interrupted(f"after {len(results)} of {len(shots.entries)} shots",
                          journals.changed_roots() if journals is not None else []) from None
    finally:
        if journals is not None:
            journals.close()
    if journals is not None:
        run.labels, run.changed = tally, journals.changed_roots()
    return run


# ---------------------------------------------------------------------------------------------
# Culling


@dataclass
class CullOutcome:
    run: ScoringRun  # run.labels: the labels written (None in a dry run)
    dest: Path  # where rejected shots go
    labels: XmpOptions
    moving: CullOptions
    plan: CullPlan | None = None  # the moves planned (None: no --move-rejected, or stopped)
    moves: MoveReport | None = None  # the moves made
    stopped: str | None = None  # the journal could not be written: the run stopped there

    @property
    def ok(self) -> bool:
        return self.run.ok and self.stopped is None and not (self.moves and self.moves.failed)

    def lines(self) -> list[str]:
        """What the cull did (in a dry run: would do), for people."""
        scored = [r for r in self.run.results if r.ok]
        if self.moving.dry_run:
            where = "in files" if self.labels.in_file else self.labels.style + " sidecars"
            return ([f"dry run: would write labels for {plural(len(scored), 'shot')} ({where})"]
                    + [f"would move {line}" for line in (self.plan.lines() if self.plan else [])])
        if self.stopped is not None or self.run.labels is None:
            return []
        lines = [self.run.labels.line()]
        if self.plan is not None and self.moves is not None:
            rejected = sum(1 for r in scored if r.label == "rejected")
            moved = self.moves.moved
            line = (f"moved {len({m.shot for m in moved})} of {rejected} rejected shots "
                    f"({len(moved)} files) to {self.dest}")
            if self.plan.kept:
                line += f"; {len(self.plan.kept)} kept: a person rated or labelled them"
            if self.moves.unmoved_shots():
                line += f"; {self.moves.unmoved_shots()} could not be moved whole and stay"
            lines.append(line)
        return lines


def cull(folder: Path, options: ScoreOptions = ScoreOptions(), labels: XmpOptions = XmpOptions(),
         moving: CullOptions = CullOptions(), reporter: Reporter | None = None) -> CullOutcome:
    """Score FOLDER, write XMP labels, and (moving.move_rejected) move rejected shots, whole,
    to moving.to (default FOLDER/_rejected/), holding the folder's lock; every change is
    journaled first, so `undo.undo(folder)` puts the tree back. Shots a person rated or
    labelled stay (unless labels.overwrite). A dry run scores and plans, and changes nothing."""
    reporter = reporter or Reporter()
    check_folder(folder)
    if moving.to is not None and not moving.move_rejected:
        raise RunError("--to goes with --move-rejected")
    try:
        dest = check_destination(folder, moving.to)
    except CullError as exc:
        raise RunError(str(exc)) from exc
    if not moving.dry_run:
        reason = cannot_write_in(folder)
        if reason:  # found out now, not after scoring every photo
            raise RunError(f"cannot write in {folder} ({reason}): iqs writes labels and its undo "
                           "journal there — make it writable, or use --dry-run")
    with FolderLock(folder, action="cull"):
        shots = find_shots([str(folder)], options.recursive, skip_dirs=[dest], reporter=reporter)
        results: list[ShotResult] = []
        try:
            run = _score(shots.entries, options, reporter, results)
        except KeyboardInterrupt:
            raise Interrupted(f"while scoring ({len(results)} of {len(shots.entries)} shots "
                              "scored)") from None
        outcome = CullOutcome(run, dest, labels, moving)
        if moving.dry_run:
            if moving.move_rejected:
                outcome.plan = _plan(outcome, folder, reporter)
        else:
            _label_and_move(outcome, folder, reporter)
            if outcome.moves is not None and not options.no_cache:
                _cache_follows(outcome.moves, reporter)
    return outcome


def _cache_follows(moves: MoveReport, reporter: Reporter) -> None:
    """The moved photos' cache entries, copied to where they are now (the old ones stay for an
    undo): a report or re-run after a cull scores nothing again."""
    cache = ResultCache()
    cache.copy_entries([(m.src, m.dst) for m in moves.moved if not m.sidecar])
    _warn_about(cache, reporter)
    cache.close()


def _plan(outcome: CullOutcome, folder: Path, reporter: Reporter) -> CullPlan:
    plan = plan_moves(outcome.run.results, folder, outcome.dest,
                      keep_judged=not outcome.labels.overwrite)
    for line in plan.kept_lines():
        reporter.message("kept", line)
    for problem in plan.problems:
        reporter.message("note", problem)
    return plan


def _label_and_move(outcome: CullOutcome, folder: Path, reporter: Reporter) -> None:
    tally = outcome.run.labels = XmpTally(reporter)
    journal = None
    try:
        with Journal.create(folder) as journal:
            for result in outcome.run.results:
                tally.write(result, outcome.labels, recorder=journal)
            if outcome.moving.move_rejected and tally.stopped is None:
                outcome.plan = _plan(outcome, folder, reporter)
                outcome.moves = execute(outcome.plan, journal)
                for _, message in outcome.moves.failed:
                    reporter.message("error", message)
    except JournalError as exc:
        outcome.stopped = str(exc)
    except KeyboardInterrupt:
        raise Interrupted(f"after {journal.steps if journal else 0} changes",
                          [journal.root] if journal is not None and journal.steps else []
                          ) from None
    if journal is not None and journal.steps:
        outcome.run.changed = [folder]


# ---------------------------------------------------------------------------------------------
# The report page (`iqs report`, `iqs cull --report`; the page itself: html_report.py)


@dataclass
class ReportRun:
    run: ScoringRun  # the results, where the shots were scored
    shots: list  # html_report.ReportShot: where each shot's files are now
    roots: list[Path]  # the folders the page covers (its changes file names them)
    thumbnail_errors: int = 0  # set by write_report

    @property
    def ok(self) -> bool:
        return self.run.ok and not self.thumbnail_errors


def _with_person_labels(shots: list) -> list:
    for shot in shots:
        if shot.result.ok:
            shot.person = html_report.person_label(shot.result)
    return shots


def _outside(paths, roots: list[Path]) -> list[Path]:
    """The folder holding `paths` that lie outside every root (where `--to` put them)."""
    outer = [p for p in paths if not any(Path(p).is_relative_to(r) for r in roots)]
    return [Path(os.path.commonpath([os.path.dirname(p) for p in outer]))] if outer else []


def report(paths: list[str], options: ScoreOptions = ScoreOptions(),
           reporter: Reporter | None = None) -> ReportRun:
    """The shots under `paths` for the report page, scored through the normal path (so the
    results cache answers for a folder already scored), with the shots `iqs cull` moved out of
    the given folders' walk (found in their journals, looked up where they are now) and a
    person's labels from the sidecars. Nothing is written."""
    reporter = reporter or Reporter()
    shots = find_shots(paths, options.recursive, reporter=reporter)
    roots = [Path(os.path.realpath(r)) for r in journal_roots(shots)]
    seen = {os.path.abspath(f) for e in shots.entries if isinstance(e, Shot) for f in e.files}
    moved: dict[str, str] = {}
    for root in roots:
        found, warnings = html_report.moved_files(root)
        for warning in warnings:
            reporter.message("warning", warning)
        moved.update(found)
    extra = sorted(p for p in moved if p not in seen and is_photo_name(p))
    entries = shots.entries + (list(discover(extra)) if extra else [])
    run = score(Shots(shots.given, entries), options, None, reporter)
    page_shots = [html_report.ReportShot(r, moved_from=moved.get(os.path.abspath(r.path)))
                  for r in run.results]
    return ReportRun(run, _with_person_labels(page_shots),
                     roots + _outside([p for p in moved if p in extra], roots))


def cull_report(outcome: CullOutcome, folder: Path) -> ReportRun:
    """The report page's shots right after a cull: its results, moved ones where they went."""
    moves = {os.path.abspath(m.src): os.path.abspath(m.dst)
             for m in (outcome.moves.moved if outcome.moves else [])}
    root = Path(os.path.realpath(folder))
    shots = html_report.after_moves(outcome.run.results, moves)
    return ReportRun(outcome.run, _with_person_labels(shots),
                     [root] + _outside([os.path.realpath(p) for p in moves.values()], [root]))


def write_report(report_run: ReportRun, output: Path, reporter: Reporter | None = None,
                 thumb_size: int = html_report.THUMB_SIZE,
                 workers: int | None = None) -> html_report.Page:
    """Build the page and write it to `output`, whole or not at all (RunError when it cannot
    be written); a shot whose thumbnail cannot be made is one error, its tile stays."""
    reporter = reporter or Reporter()
    page = html_report.build_page(report_run.shots, report_run.roots,
                                  wording=report_run.run.wording, thumb_size=thumb_size,
                                  workers=workers)
    for error in page.thumbnail_errors:
        reporter.message("error", error)
    report_run.thumbnail_errors = len(page.thumbnail_errors)
    try:
        html_report.write_page(page, output)
    except OSError as exc:
        raise RunError(describe_os_error(exc, f"write the report {output}")) from None
    return page
