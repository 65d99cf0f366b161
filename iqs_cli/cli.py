"""The `iqs` command: options in, calls to the modules that do the work, output out."""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, Optional

import typer
from typer.core import TyperCommand
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from iqs_cli import __version__, cull, xmp
from iqs_cli.fsutil import cannot_write_in
from iqs_cli.journal import FolderBusy, FolderLock, Journal, JournalError, RootJournals
from iqs_cli.undo import pending_above, undo
from iqs_cli.cache import ResultCache
from iqs_cli.card import DEFAULT_MODEL_NAME, CardError, load_card, shipped_models_dir
from iqs_cli.discover import Shot, discover, discover_files, paths_from_stdin, skipped_summary
from iqs_cli.engine import EngineError, ModelSession, default_batch
from iqs_cli.report import (FORMATS, ResultWriter, console_for, display_path, open_output, plural,
                            summary_line)
from iqs_cli.result import ShotResult
from iqs_cli.scoring import FOCUS_MODES, Scorer
from iqs_cli.verdict import Thresholds, reason_wording

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, EXIT_BUSY, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

app = typer.Typer(
    help="Score photos with a neural image-quality model and label them for digiKam, "
    "darktable and Lightroom.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
# soft_wrap: a terminal wraps long lines itself; a log file gets each message on one line.
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def fail_usage(message: str) -> NoReturn:
    stderr.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(EXIT_USAGE)


def version_callback(value: bool) -> None:
    if value:
        print(f"iqs {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=version_callback, is_eager=True,
                                 help="Show the version and exit."),
) -> None:
    """iqs: photo culling from the command line."""


class Command(TyperCommand):
    """Help without Python type names (<list[str]>, <bool>) beside options: each option's
    metavar (NAME, N, P ...) and its text say what it takes, and flags take nothing."""

    def format_help(self, ctx, formatter) -> None:
        for param in self.get_params(ctx):  # the --help option too
            plain = getattr(param, "is_flag", False) or param.param_type_name == "argument"
            shown = None if plain else param.metavar
            param.display_type_rich = lambda ctx, shown=shown: shown
        super().format_help(ctx, formatter)


def _probability(value: Optional[float]) -> Optional[float]:
    if value is not None and not 0.0 <= value <= 1.0:
        raise typer.BadParameter(f"{value:g} is not a probability: give a number from 0 to 1 "
                                 f"(e.g. {value / 100:g} for {value:g} %)"
                                 if 1.0 < value <= 100.0 else
                                 f"{value:g} is not a probability: give a number from 0 to 1")
    return value


INPUT, MODEL, OUTPUT, LABELS, MOVING = "Input", "Model", "Output", "XMP labels", "Moving"


def _shipped() -> str:
    try:
        names = sorted(p.stem for p in shipped_models_dir().glob("*.onnx"))
    except (ModuleNotFoundError, OSError):
        names = []
    return ", ".join(f"{n} (default)" if n == DEFAULT_MODEL_NAME else n for n in names) or "none"


# Options shared by `score` and `cull` (typer reads them from each command's signature).
ModelOpt = typer.Option(None, "--model", "-m", metavar="NAME|PATH", rich_help_panel=MODEL, help=f"{_shipped()}, or a .onnx file with its .json card beside it.")
DeviceOpt = typer.Option("cpu", "--device", metavar="DEVICE", rich_help_panel=MODEL, show_default=False, help="cpu (default), cuda, or auto (CUDA if there).")
BatchOpt = typer.Option(None, "--batch-size", min=1, metavar="N", rich_help_panel=MODEL, show_default=False, help="Photos per inference call (2 on a CPU, 16 on a GPU).")
WorkersOpt = typer.Option(None, "--workers", min=1, metavar="N", rich_help_panel=MODEL, help="Decoding threads (default: one per core).")
RecursiveOpt = typer.Option(True, "--recursive/--no-recursive", rich_help_panel=INPUT, show_default=False, help="Walk subfolders (default: yes).")
NoCacheOpt = typer.Option(False, "--no-cache", rich_help_panel=INPUT, help="Score again; leave the results cache alone.")
QuietOpt = typer.Option(False, "--quiet", "-q", rich_help_panel=OUTPUT, help="No progress bar or summary.")
RejectAtOpt = typer.Option(None, "--reject-at", metavar="P", callback=_probability, rich_help_panel=MODEL, help="Reject when P(rejected) >= P (0-1; default: the card's).")
AcceptAtOpt = typer.Option(None, "--accept-at", metavar="P", callback=_probability, rich_help_panel=MODEL, help="Accept only when P(accepted) >= P (0-1).")
SidecarOpt = typer.Option("digikam", "--sidecar-name", metavar="STYLE", rich_help_panel=LABELS, show_default=False, help="digikam (default): photo.ext.xmp; lightroom: photo.xmp.")
InFileOpt = typer.Option(False, "--in-file", rich_help_panel=LABELS, help="Into JPEG/TIFF/PNG/WebP themselves (RAW: a sidecar).")
ColorOpt = typer.Option(False, "--color-labels", rich_help_panel=LABELS, help="Also color labels: red, yellow, green.")
FocusOpt = typer.Option("rejected", "--focus-check", metavar="MODE", rich_help_panel=MODEL, show_default=False, help="Second look at the sharpest region: rejected (default: at rejected shots), all (also missed focus; slower) or off.")
OverwriteOpt = typer.Option(False, "--overwrite", rich_help_panel=LABELS, help="Replace labels a person set (kept by default).")


@dataclass
class XmpOptions:
    style: str
    in_file: bool
    color_labels: bool
    overwrite: bool

    def __post_init__(self) -> None:
        if self.style not in xmp.SIDECAR_STYLES:
            fail_usage(f"--sidecar-name must be one of {', '.join(xmp.SIDECAR_STYLES)}")


@dataclass
class XmpTally:
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
            stderr.print(f"[bold red]error:[/] {exc}; no more labels are written in this run",
                         soft_wrap=True, highlight=False)
            return
        for outcome in outcomes:
            if not outcome.ok:
                self.failed += 1
                stderr.print(f"[bold magenta]error:[/] {outcome.error}", soft_wrap=True,
                             highlight=False, markup=True)
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
        stderr.print(f"[bold magenta]error:[/] cannot write in {display_path(str(folder))} "
                     f"({reason}): its photos get no XMP labels — make it writable, then re-run",
                     soft_wrap=True, highlight=False)
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

    @property
    def failed(self) -> list[ShotResult]:
        return [r for r in self.results if not r.ok]

    def counts(self) -> Counter:
        return Counter(r.label for r in self.results if r.ok)


def _check_folder(folder: Path) -> None:
    if not folder.exists():
        fail_usage(f"{folder}: does not exist")
    if not folder.is_dir():
        fail_usage(f"{folder}: not a folder (give the folder that holds the photos)")


def find_shots(paths: list[str], recursive: bool = True, skip_dirs=(), quiet: bool = False) -> list:
    """The shots (and discovery errors) to score; a clear message and exit when none. Photos
    in formats iqs cannot read are counted and named in one line."""
    if not paths:
        fail_usage("give at least one folder or photo, or - to read paths from stdin")
    missing = [p for p in paths if p != "-" and not os.path.lexists(p)]
    if missing:
        fail_usage(f"{missing[0]}: does not exist" + (f" (and {len(missing) - 1} more given)"
                                                       if len(missing) > 1 else ""))
    skipped: Counter = Counter()
    if paths == ["-"]:
        entries = list(discover_files(paths_from_stdin(sys.stdin.buffer), skipped=skipped))
    elif "-" in paths:
        fail_usage("'-' (read paths from stdin) cannot be mixed with other paths")
    else:
        entries = list(discover(paths, recursive=recursive, skip_dirs=list(skip_dirs),
                                skipped=skipped))
    summary = skipped_summary(skipped)
    if not entries:
        where = "stdin" if paths == ["-"] else ", ".join(paths)
        stderr.print(f"[bold red]error:[/] no photos found in {where}"
                     + (f"; {summary}" if summary else ""), soft_wrap=True, highlight=False)
        raise typer.Exit(EXIT_SOME_FAILED)
    if summary and not quiet:
        stderr.print(f"[yellow]note:[/] {summary}", soft_wrap=True, highlight=False)
    return entries


def _open_session(model: Optional[str], device: str) -> ModelSession:
    try:
        card = load_card(model)
        return ModelSession(card, device=device)
    except (CardError, EngineError) as exc:
        fail_usage(str(exc))


@dataclass
class ScoringOptions:
    """What `score` and `cull` share about scoring."""

    model: Optional[str]
    device: str
    batch_size: Optional[int]
    workers: Optional[int]
    no_cache: bool
    quiet: bool
    reject_at: Optional[float]
    accept_at: Optional[float]
    focus_check: str = "rejected"


def _warn_about(cache: ResultCache | None) -> None:
    """A cache problem, told once: the run goes on without the cache."""
    warning = cache.take_warning() if cache is not None else None
    if warning:
        stderr.print(f"[yellow]warning:[/] {warning}", soft_wrap=True, highlight=False)


def run_scoring(entries: list, options: ScoringOptions, on_result=None,
                results: list[ShotResult] | None = None) -> ScoringRun:
    """Score `entries`; each result goes to `results` (so a caller still has them after an
    interruption) and to `on_result`."""
    if options.focus_check not in FOCUS_MODES:
        fail_usage(f"unknown --focus-check {options.focus_check!r}; use one of "
                   f"{', '.join(FOCUS_MODES)}")
    session = _open_session(options.model, options.device)
    cache = None if options.no_cache else ResultCache(model_sha256=session.sha256)
    _warn_about(cache)
    scorer = Scorer(session, Thresholds(reject_at=options.reject_at, accept_at=options.accept_at),
                    cache, batch_size=options.batch_size or default_batch(session),
                    workers=options.workers,
                    focus=options.focus_check)
    results = [] if results is None else results
    started = time.perf_counter()
    progress = Progress(
        TextColumn("[bold]scoring[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(), console=stderr, transient=True,
        disable=options.quiet or not stderr.is_terminal,
    )
    try:
        with progress:
            task = progress.add_task("score", total=len(entries), rate="")
            for result in scorer.score(entries):
                results.append(result)
                if not result.ok:
                    progress.console.print(
                        f"[bold magenta]error:[/] {display_path(result.path)}: {result.error}",
                        soft_wrap=True, highlight=False, markup=True,
                    )
                if on_result is not None:
                    on_result(result)
                elapsed = time.perf_counter() - started
                progress.update(task, advance=1, rate=f"{len(results) / max(elapsed, 1e-6):.1f}/s")
    finally:
        if cache is not None:
            _warn_about(cache)
            cache.close()
    return ScoringRun(results, time.perf_counter() - started, reason_wording(session.card))


def _journal_roots(paths: list[str], entries: list) -> list[Path]:
    """Where `score --write-xmp` keeps its journals: each folder given, and for photos given
    one by one (or on stdin) the folder that holds them all, when iqs can write there (else
    each photo's own folder)."""
    folders = [Path(os.path.abspath(p)) for p in paths if p != "-" and os.path.isdir(p)]
    loose = sorted({str(e.primary.parent) for e in entries if isinstance(e, Shot)
                    and not any(f in e.primary.parents for f in folders)})
    if loose:
        common = os.path.commonpath(loose)
        if len(loose) == 1 or cannot_write_in(Path(common)) is None:
            loose = [common]
    return folders + [Path(p) for p in loose]


def _print_undo_hint(roots: list[Path], out: Console) -> None:
    for root in roots:
        out.print(f"undo with: iqs undo {root}", soft_wrap=True)


# What an --output file's extension says about its format (anything else needs --format).
FORMAT_OF_SUFFIX = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def _resolve_format(fmt: str, output: Optional[Path]) -> str:
    fmt = fmt.lower()
    if fmt not in FORMATS:
        fail_usage(f"unknown --format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt != "auto":
        return fmt
    if output is not None and str(output) != "-":
        if output.exists() and not output.is_file():
            return "jsonl"  # /dev/stdout, a FIFO: a stream for a program
        known = FORMAT_OF_SUFFIX.get(output.suffix.lower())
        if known is None:
            fail_usage(f"cannot tell the format of {output} from its extension: name it .csv, "
                       ".json or .jsonl, or give --format (table, jsonl, json, csv)")
        return known
    return "table" if sys.stdout.isatty() else "jsonl"


def _print_summary(run: ScoringRun, quiet: bool) -> None:
    """The counts and time, for a person at a terminal (a log or a pipe has the records)."""
    if not quiet and stderr.is_terminal:
        cached = sum(1 for r in run.results if r.cached)
        stderr.print(summary_line(run.counts(), len(run.failed), cached, run.seconds))


@app.command(cls=Command)
def score(
    paths: list[str] = typer.Argument(None, metavar="PATH", show_default=False, help="Folders, photos, or - to read paths from stdin (find ... | iqs score -)."),
    recursive: bool = RecursiveOpt,
    no_cache: bool = NoCacheOpt,
    model: Optional[str] = ModelOpt,
    device: str = DeviceOpt,
    batch_size: Optional[int] = BatchOpt,
    workers: Optional[int] = WorkersOpt,
    reject_at: Optional[float] = RejectAtOpt,
    accept_at: Optional[float] = AcceptAtOpt,
    focus_check: str = FocusOpt,
    fmt: str = typer.Option("auto", "--format", "-f", metavar="FORMAT", rich_help_panel=OUTPUT, show_default=False, help="table, jsonl, json or csv (default: table on a terminal, else jsonl, or -o's extension)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", metavar="FILE", rich_help_panel=OUTPUT, help="Write results to FILE (.csv, .json, .jsonl), whole or not at all."),
    quiet: bool = QuietOpt,
    write_xmp: bool = typer.Option(False, "--write-xmp", rich_help_panel=LABELS, help="Also write XMP labels (`iqs undo` takes them back)."),
    sidecar_name: str = SidecarOpt,
    in_file: bool = InFileOpt,
    color_labels: bool = ColorOpt,
    overwrite: bool = OverwriteOpt,
) -> None:
    """Score photos: label (rejected / pending / accepted), MOS 0-100, stars, reasons."""
    fmt = _resolve_format(fmt, output)
    xmp_options = XmpOptions(sidecar_name, in_file, color_labels, overwrite)
    options = ScoringOptions(model, device, batch_size, workers, no_cache, quiet, reject_at,
                             accept_at, focus_check)
    entries = find_shots(paths or [], recursive, quiet=quiet)
    journals = RootJournals(_journal_roots(paths, entries)) if write_xmp else None
    tally = XmpTally()
    stream, target = open_output(output)
    writer = ResultWriter(fmt, stream)
    results: list[ShotResult] = []

    def on_result(result: ShotResult) -> None:
        writer.add(result)
        if journals is not None:
            tally.write(result, xmp_options, recorder=journals)

    try:
        run = run_scoring(entries, options, on_result=on_result, results=results)
        writer.close(console_for(stream) if fmt == "table" else None, run.wording)
    except BaseException as exc:
        if target is not None:
            target.abort()
        if isinstance(exc, KeyboardInterrupt):
            _interrupted(f"after {len(results)} of {len(entries)} shots", journals)
        raise
    finally:
        if journals is not None:
            journals.close()
        if target is None and stream is not sys.stdout:
            stream.close()  # a device or FIFO given as --output
    if target is not None:
        target.commit()
    _print_summary(run, quiet)
    if journals is not None and not quiet:
        stderr.print(tally.line())
        _print_undo_hint(journals.changed_roots(), stderr)
    raise typer.Exit(EXIT_SOME_FAILED if run.failed or tally.failed else EXIT_OK)


def _interrupted(where: str, journals: RootJournals | None = None,
                 journal: Journal | None = None) -> NoReturn:
    """Ctrl-C: say where the run stopped and how to take back what it changed."""
    roots = journals.changed_roots() if journals is not None else []
    if journal is not None and journal.steps:
        roots.append(journal.root)
    stderr.print(f"[yellow]interrupted[/] {where}" + (
        "; the changes made so far are in the undo journal" if roots else "; nothing was changed"),
        soft_wrap=True, highlight=False)
    _print_undo_hint(roots, stderr)
    raise typer.Exit(EXIT_INTERRUPTED)


@app.command("cull", cls=Command)
def cull_command(
    folder: Path = typer.Argument(..., metavar="FOLDER", show_default=False, help="The folder to cull (walked recursively unless --no-recursive)."),
    recursive: bool = RecursiveOpt,
    no_cache: bool = NoCacheOpt,
    model: Optional[str] = ModelOpt,
    device: str = DeviceOpt,
    batch_size: Optional[int] = BatchOpt,
    workers: Optional[int] = WorkersOpt,
    reject_at: Optional[float] = RejectAtOpt,
    accept_at: Optional[float] = AcceptAtOpt,
    focus_check: str = FocusOpt,
    quiet: bool = QuietOpt,
    sidecar_name: str = SidecarOpt,
    in_file: bool = InFileOpt,
    color_labels: bool = ColorOpt,
    overwrite: bool = OverwriteOpt,
    move_rejected: bool = typer.Option(False, "--move-rejected", rich_help_panel=MOVING, help="Move rejected shots, whole, to FOLDER/_rejected/."),
    to: Optional[Path] = typer.Option(None, "--to", metavar="FOLDER", rich_help_panel=MOVING, help="... or to this folder (outside FOLDER)."),
    dry_run: bool = typer.Option(False, "--dry-run", rich_help_panel=MOVING, help="Print the plan; change nothing."),
) -> None:
    """Score a folder, write XMP labels, and (with --move-rejected) move rejected shots away.

    Every change is journaled first: `iqs undo FOLDER` puts the tree back exactly.

    Shots a person rated or labelled stay where they are (unless --overwrite).
    """
    _check_folder(folder)
    xmp_options = XmpOptions(sidecar_name, in_file, color_labels, overwrite)
    if to is not None and not move_rejected:
        fail_usage("--to goes with --move-rejected")
    try:
        dest = cull.check_destination(folder, to)
    except cull.CullError as exc:
        fail_usage(str(exc))
    if not dry_run:
        reason = cannot_write_in(folder)
        if reason:  # found out now, not after scoring every photo
            fail_usage(f"cannot write in {folder} ({reason}): iqs writes labels and its undo "
                       "journal there — make it writable, or use --dry-run")
    options = ScoringOptions(model, device, batch_size, workers, no_cache, quiet, reject_at,
                             accept_at, focus_check)
    out = Console(highlight=False, soft_wrap=True)
    try:
        with FolderLock(folder, action="cull"):
            code = _cull(folder, dest, options, xmp_options, move_rejected, dry_run, recursive, out)
    except FolderBusy as exc:
        stderr.print(f"[bold red]error:[/] {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(EXIT_BUSY)
    raise typer.Exit(code)


def _cull(folder: Path, dest: Path, options: ScoringOptions, xmp_options: XmpOptions,
          move_rejected: bool, dry_run: bool, recursive: bool, out: Console) -> int:
    entries = find_shots([str(folder)], recursive, skip_dirs=[dest], quiet=options.quiet)
    results: list[ShotResult] = []
    try:
        run = run_scoring(entries, options, results=results)
    except KeyboardInterrupt:
        _interrupted(f"while scoring ({len(results)} of {len(entries)} shots scored)")
    scored = [r for r in run.results if r.ok]
    _print_summary(run, options.quiet)
    plan = None
    if dry_run:
        out.print(f"dry run: would write labels for {len(scored)} shots "
                  f"({'in files' if xmp_options.in_file else xmp_options.style + ' sidecars'})")
        if move_rejected:
            plan = cull.plan_moves(run.results, folder, dest, keep_judged=not xmp_options.overwrite)
            for line in plan.lines():
                out.print(f"would move {line}", soft_wrap=True)
            _print_plan_notes(plan)
        return EXIT_SOME_FAILED if run.failed else EXIT_OK

    tally = XmpTally()
    report = None
    journal = None
    try:
        with Journal.create(folder) as journal:
            for result in scored:
                tally.write(result, xmp_options, recorder=journal)
            if move_rejected and tally.stopped is None:
                plan = cull.plan_moves(run.results, folder, dest,
                                       keep_judged=not xmp_options.overwrite)
                _print_plan_notes(plan)
                report = cull.execute(plan, journal)
                for _, message in report.failed:
                    stderr.print(f"[bold magenta]error:[/] {message}", soft_wrap=True)
    except JournalError as exc:
        stderr.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        _print_undo_hint([folder] if journal is not None and journal.steps else [], out)
        return EXIT_SOME_FAILED
    except KeyboardInterrupt:
        _interrupted(f"after {journal.steps if journal else 0} changes", journal=journal)
    out.print(tally.line())
    if plan is not None and report is not None:
        rejected = sum(1 for r in scored if r.label == "rejected")
        moved_shots = len({m.shot for m in report.moved})
        line = f"moved {moved_shots} of {rejected} rejected shots ({len(report.moved)} files) to {dest}"
        if plan.kept:
            line += f"; {len(plan.kept)} kept: a person rated or labelled them"
        if report.unmoved_shots():
            line += f"; {report.unmoved_shots()} could not be moved whole and stay"
        out.print(line, soft_wrap=True)
    if journal is not None and journal.steps:
        _print_undo_hint([folder], out)
    problems = run.failed or tally.failed or (report is not None and report.failed)
    return EXIT_SOME_FAILED if problems else EXIT_OK


def _print_plan_notes(plan: cull.CullPlan) -> None:
    for line in plan.kept_lines():
        stderr.print(f"[green]kept:[/] {line}", soft_wrap=True, highlight=False)
    for problem in plan.problems:
        stderr.print(f"[yellow]note:[/] {problem}", soft_wrap=True, highlight=False)


@app.command("undo", cls=Command)
def undo_command(
    folder: Path = typer.Argument(..., metavar="FOLDER", show_default=False, help="The folder a previous `iqs cull` or `iqs score --write-xmp` ran on."),
) -> None:
    """Undo the last `iqs cull` or `iqs score --write-xmp` on FOLDER: move files back, restore
    or remove sidecars.

    Each undo goes one run further back; an interrupted undo can simply be run again.
    """
    _check_folder(folder)
    try:
        report = undo(folder)
    except FolderBusy as exc:
        stderr.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(EXIT_BUSY)
    except JournalError as exc:
        stderr.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(EXIT_SOME_FAILED)
    out = Console(highlight=False, soft_wrap=True)
    if report.nothing_to_undo:
        above = pending_above(folder)
        if above is not None:
            out.print(f"nothing to undo in {folder} itself; the run that changed it was over "
                      f"{above}: iqs undo {above}")
        else:
            out.print(f"nothing to undo in {folder}")
        raise typer.Exit(EXIT_OK)
    out.print(f"undid the run of {report.started}: {plural(len(report.restored), 'file')} "
              f"restored, {len(report.removed)} removed")
    for line in report.kept:
        stderr.print(f"[yellow]kept:[/] {line}", soft_wrap=True)
    for line in report.errors:
        stderr.print(f"[bold magenta]error:[/] {line}", soft_wrap=True)
    if report.errors:
        stderr.print(f"fix what is named above, then run `iqs undo {folder}` again: it goes on "
                     "where this one stopped", soft_wrap=True, highlight=False)
    raise typer.Exit(EXIT_SOME_FAILED if report.errors else EXIT_OK)


def _training():
    """The training package, imported only by train/eval/export (it needs torch)."""
    try:
        from iqs_training import commands
    except ImportError as exc:
        fail_usage(f"training needs the `train` extra ({exc.name or exc} is missing): "
                   "pip install 'iqs[train]' (or `pip install \".[train]\"` in a checkout)")
    return commands


DataRootOpt = typer.Option(Path("."), "--data-root", help="Folder holding the datasets named in the config (their roots are relative to it).")
AllowMissingOpt = typer.Option(False, "--allow-missing", help="Drop images listed in label files but missing on disk (default: stop with a list).")


@app.command()
def train(
    config: Path = typer.Option(..., "--config", "-c", help="Training config (JSON), e.g. training/configs/combined.json."),
    data_root: Path = DataRootOpt,
    out: Path = typer.Option(Path("runs/train"), "--out", "-o", help="Run folder: checkpoints, metrics.jsonl, config.json."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda (AMP on CUDA)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Override the config's number of epochs."),
    allow_missing: bool = AllowMissingOpt,
) -> None:
    """Train a model from a config (needs the `train` extra: torch)."""
    import shlex
    import warnings

    from rich.markup import escape

    commands = _training()
    said: list[str] = []
    shown_by_python = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        # What the data lacks is the user's business: one plain line, not Python's file:line.
        if not issubclass(category, commands.USER_WARNINGS):
            return shown_by_python(message, category, filename, lineno, file, line)
        said.append(str(message))
        stderr.print(f"[bold yellow]warning:[/] {escape(str(message))}", soft_wrap=True)

    with warnings.catch_warnings():
        warnings.showwarning = show
        try:
            result = commands.train(config, data_root, out, device=device, resume=resume,
                                    epochs=epochs, progress=True, allow_missing=allow_missing)
        except commands.CommandError as exc:
            fail_usage(str(exc))
    if said:  # a long run pushes them out of sight
        stderr.print(f"[bold yellow]note:[/] {len(said)} warning{'s' if len(said) > 1 else ''} "
                     "about the data above", soft_wrap=True)
    hint, model, note = commands.export_hint(result.best_checkpoint, config, data_root,
                                             result.split_sizes)
    # Plain print: each command must stay one line, exactly as it can be pasted.
    print(f"best checkpoint: {result.best_checkpoint}\nexport it with: {hint}", flush=True)
    if note:
        print(f"({note})", flush=True)
    print(f"then score with: iqs score PHOTOS --model {shlex.quote(str(model))}", flush=True)


@app.command("eval")
def eval_command(
    model: Path = typer.Option(..., "--model", "-m", help="A .onnx model (with its card) or a training checkpoint (.pt)."),
    config: Path = typer.Option(..., "--config", "-c", help="Config naming the datasets and their splits."),
    data_root: Path = DataRootOpt,
    split: str = typer.Option("test", "--split", help="train, val or test."),
    device: str = typer.Option("cpu", "--device"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Also write the JSON report here."),
    allow_missing: bool = AllowMissingOpt,
) -> None:
    """Measure a model: SRCC, PLCC, KRCC, RMSE per dataset; accuracy, macro-F1, confusion."""
    commands = _training()
    try:
        report = commands.evaluate(model, config, data_root, split=split, device=device, out=out,
                                   allow_missing=allow_missing)
    except commands.CommandError as exc:
        fail_usage(str(exc))
    from iqs_training.evaluate import plain_json

    print(json.dumps(plain_json(report), indent=2))


@app.command()
def export(
    checkpoint: Path = typer.Argument(..., help="Training checkpoint (best.pt of a run)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output stem: writes STEM.onnx and STEM.json (the card)."),
    name: Optional[str] = typer.Option(None, "--name", help="Model name for the card (default: the stem)."),
    version: str = typer.Option("0.1.0", "--version"),
    metrics: Optional[Path] = typer.Option(None, "--metrics", help="An `iqs eval --out` report for the card."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="With --data-root: evaluate the exported model on held-out data for the card."),
    data_root: Optional[Path] = typer.Option(None, "--data-root"),
    split: str = typer.Option("test", "--split"),
    int8: bool = typer.Option(False, "--int8", help="Also write STEM-int8.onnx (+ card): int8 convolutions calibrated on the config's training photos, checked against fp32 on --split (needs --config and --data-root)."),
) -> None:
    """Export a checkpoint to ONNX plus its model card."""
    commands = _training()
    if int8 and (config is None or data_root is None):
        fail_usage("--int8 needs --config and --data-root: it calibrates on the config's "
                   "training photos and checks the int8 model on its --split photos")
    try:
        path = commands.export(checkpoint, out, name=name, version=version, metrics=metrics,
                               config=config, data_root=data_root, split=split)
    except commands.CommandError as exc:
        fail_usage(str(exc))
    console = Console(highlight=False, soft_wrap=True)
    console.print(f"wrote {path} and {path.with_suffix('.json')}")
    if int8:
        from iqs_training.quantize import quantize_model

        small = path.with_name(f"{path.stem}-int8.onnx")
        try:
            info = quantize_model(path, config, data_root, small, split=split)
        except commands.CommandError as exc:
            fail_usage(str(exc))
        fidelity = info["fidelity"]
        console.print(f"wrote {small} and {small.with_suffix('.json')}: SRCC {fidelity['srcc_fp32']}"
                      f" -> {fidelity['srcc_int8']}, labels agree {fidelity['labels_agree']:.1%}"
                      f" on {fidelity['photos']} {split} photos; "
                      + ("fidelity holds" if fidelity["holds"] else
                         "fidelity does NOT hold: keep using the fp32 model"))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        stderr.print("[yellow]interrupted[/]")
        sys.exit(130)
