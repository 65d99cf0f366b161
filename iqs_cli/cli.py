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
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from iqs_cli import __version__, cull, xmp
from iqs_cli.fsutil import cannot_write_in
from iqs_cli.journal import FolderBusy, FolderLock, Journal, JournalError, RootJournals
from iqs_cli.undo import undo
from iqs_cli.cache import ResultCache
from iqs_cli.card import CardError, load_card
from iqs_cli.discover import Shot, discover, discover_files, paths_from_stdin, skipped_summary
from iqs_cli.engine import EngineError, ModelSession
from iqs_cli.report import FORMATS, ResultWriter, console_for, display_path, open_output, summary_line
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
stderr = Console(stderr=True, highlight=False)


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


# Options shared by `score` and `cull` (typer reads them from each command's signature).
ModelOpt = typer.Option(None, "--model", "-m", help="Shipped model name or path to a .onnx file (its .json card beside it).")
DeviceOpt = typer.Option("cpu", "--device", help="cpu, cuda, or auto (CUDA when ONNX Runtime has it).")
BatchOpt = typer.Option(8, "--batch-size", min=1, help="Photos per inference call.")
WorkersOpt = typer.Option(None, "--workers", min=1, help="Decoding threads (default: one per core).")
RecursiveOpt = typer.Option(True, "--recursive/--no-recursive", help="Walk subfolders.")
NoCacheOpt = typer.Option(False, "--no-cache", help="Score everything again; do not read or write the results cache.")
QuietOpt = typer.Option(False, "--quiet", "-q", help="No progress bar or summary (errors are still printed).")
RejectAtOpt = typer.Option(None, "--reject-at", min=0.0, max=1.0, help="Reject when P(rejected) >= this, and only then (default: the model card's value, else the most likely class wins).")
AcceptAtOpt = typer.Option(None, "--accept-at", min=0.0, max=1.0, help="Accept only when P(accepted) >= this.")
SidecarOpt = typer.Option("digikam", "--sidecar-name", help="digikam: photo.ext.xmp (digiKam, darktable); lightroom: photo.xmp.")
InFileOpt = typer.Option(False, "--in-file", help="Write XMP into JPEG/TIFF/PNG/WebP files themselves (never into RAW files).")
ColorOpt = typer.Option(False, "--color-labels", help="Also set color labels: rejected red, pending yellow, accepted green.")
FocusOpt = typer.Option("rejected", "--focus-check", help="Second look at about twice the input scale, on the sharpest region: at shots the whole view would reject (rejected: not blurry if some part is in focus), at every shot (all: also catches missed focus, about half the speed), or off.")
OverwriteOpt = typer.Option(False, "--overwrite", help="Replace pick labels and ratings a person set (kept by default).")


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


def find_shots(paths: list[str], recursive: bool = True, skip_dirs=(), quiet: bool = False) -> list:
    """The shots (and discovery errors) to score; a clear message and exit when none. Photos
    in formats iqs cannot read are counted and named in one line."""
    if not paths:
        fail_usage("give at least one folder or photo, or - to read paths from stdin")
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
    batch_size: int
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
                    cache, batch_size=options.batch_size, workers=options.workers,
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


def _resolve_format(fmt: str, output: Optional[Path]) -> str:
    if fmt not in FORMATS:
        fail_usage(f"unknown --format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt != "auto":
        return fmt
    if output is not None and str(output) != "-":
        return {".csv": "csv", ".json": "json"}.get(output.suffix.lower(), "jsonl")
    return "table" if sys.stdout.isatty() else "jsonl"


def _print_summary(run: ScoringRun, quiet: bool) -> None:
    if not quiet:
        cached = sum(1 for r in run.results if r.cached)
        stderr.print(summary_line(run.counts(), len(run.failed), cached, run.seconds))


@app.command()
def score(
    paths: list[str] = typer.Argument(None, help="Folders, photos, or - to read paths from stdin (find ... | iqs score -)."),
    model: Optional[str] = ModelOpt,
    device: str = DeviceOpt,
    batch_size: int = BatchOpt,
    workers: Optional[int] = WorkersOpt,
    fmt: str = typer.Option("auto", "--format", "-f", help="table, jsonl, json or csv (default: table on a terminal, jsonl when piped)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write results to this file (written whole, atomically)."),
    recursive: bool = RecursiveOpt,
    no_cache: bool = NoCacheOpt,
    quiet: bool = QuietOpt,
    reject_at: Optional[float] = RejectAtOpt,
    accept_at: Optional[float] = AcceptAtOpt,
    focus_check: str = FocusOpt,
    write_xmp: bool = typer.Option(False, "--write-xmp", help="Also write pick labels and ratings as XMP (see `iqs cull` for moving and undo)."),
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


@app.command("cull")
def cull_command(
    folder: Path = typer.Argument(..., help="The folder to cull (walked recursively unless --no-recursive)."),
    move_rejected: bool = typer.Option(False, "--move-rejected", help="Move rejected shots (all their files and sidecars) to FOLDER/_rejected/."),
    to: Optional[Path] = typer.Option(None, "--to", help="Move rejected shots here instead (outside FOLDER), keeping subfolders."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Score and print the plan; change nothing."),
    model: Optional[str] = ModelOpt,
    device: str = DeviceOpt,
    batch_size: int = BatchOpt,
    workers: Optional[int] = WorkersOpt,
    recursive: bool = RecursiveOpt,
    no_cache: bool = NoCacheOpt,
    quiet: bool = QuietOpt,
    reject_at: Optional[float] = RejectAtOpt,
    accept_at: Optional[float] = AcceptAtOpt,
    focus_check: str = FocusOpt,
    sidecar_name: str = SidecarOpt,
    in_file: bool = InFileOpt,
    color_labels: bool = ColorOpt,
    overwrite: bool = OverwriteOpt,
) -> None:
    """Score a folder, write XMP labels, and (with --move-rejected) move rejected shots away.

    Every change is journaled first: `iqs undo FOLDER` puts the tree back exactly. Shots a
    person rated or labelled stay where they are (unless --overwrite).
    """
    if not folder.is_dir():
        fail_usage(f"{folder}: not a folder")
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
    out = Console(highlight=False)
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


@app.command("undo")
def undo_command(
    folder: Path = typer.Argument(..., help="The folder a previous `iqs cull` or `iqs score --write-xmp` ran on."),
) -> None:
    """Undo the last `iqs cull` or `iqs score --write-xmp` on FOLDER: move files back, restore
    or remove sidecars.

    Each undo goes one run further back; an interrupted undo can simply be run again.
    """
    if not folder.is_dir():
        fail_usage(f"{folder}: not a folder")
    try:
        report = undo(folder)
    except FolderBusy as exc:
        stderr.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(EXIT_BUSY)
    except JournalError as exc:
        stderr.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(EXIT_SOME_FAILED)
    out = Console(highlight=False)
    if report.nothing_to_undo:
        out.print(f"nothing to undo in {folder}")
        raise typer.Exit(EXIT_OK)
    out.print(f"undid the run of {report.started}: {len(report.restored)} files restored, "
              f"{len(report.removed)} removed")
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
        from training import commands
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
    commands = _training()
    try:
        result = commands.train(config, data_root, out, device=device, resume=resume, epochs=epochs,
                                progress=True, allow_missing=allow_missing)
    except commands.CommandError as exc:
        fail_usage(str(exc))
    Console(highlight=False).print(f"best checkpoint: {result.best_checkpoint}\n"
                                   f"export it with: iqs export {result.best_checkpoint} --out weights/NAME "
                                   f"--config {config} --data-root {data_root}")


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
    from training.evaluate import plain_json

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
) -> None:
    """Export a checkpoint to ONNX plus its model card."""
    commands = _training()
    try:
        path = commands.export(checkpoint, out, name=name, version=version, metrics=metrics,
                               config=config, data_root=data_root, split=split)
    except commands.CommandError as exc:
        fail_usage(str(exc))
    Console(highlight=False).print(f"wrote {path} and {path.with_suffix('.json')}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        stderr.print("[yellow]interrupted[/]")
        sys.exit(130)
