"""The `iqs` command: options in, calls to the modules that do the work, output out."""

from __future__ import annotations

import json
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
from iqs_cli.cache import ResultCache
from iqs_cli.card import CardError, load_card
from iqs_cli.discover import discover, discover_files, paths_from_stdin
from iqs_cli.engine import EngineError, ModelSession
from iqs_cli.report import FORMATS, ResultWriter, console_for, display_path, open_output, summary_line
from iqs_cli.result import ShotResult
from iqs_cli.scoring import FOCUS_MODES, Scorer
from iqs_cli.verdict import Thresholds, reason_wording

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2

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

    def write(self, result: ShotResult, options: XmpOptions, recorder=None) -> None:
        if not result.ok:
            return
        for outcome in xmp.write_shot(result, style=options.style, in_file=options.in_file,
                                      color_labels=options.color_labels,
                                      overwrite=options.overwrite, recorder=recorder):
            if not outcome.ok:
                self.failed += 1
                stderr.print(f"[bold magenta]error:[/] {outcome.error}", soft_wrap=True,
                             highlight=False, markup=True)
                continue
            self.created += outcome.created
            self.updated += not outcome.created
            self.human_kept += outcome.human_kept

    def line(self) -> str:
        text = f"XMP: {self.created} written new, {self.updated} updated"
        if self.human_kept:
            text += f", {self.human_kept} kept labels a person set (--overwrite replaces them)"
        if self.failed:
            text += f", {self.failed} failed"
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


def _entries(paths: list[str], recursive: bool, skip_dirs: list[Path]):
    if paths == ["-"]:
        return list(discover_files(paths_from_stdin(sys.stdin.buffer)))
    if "-" in paths:
        fail_usage("'-' (read paths from stdin) cannot be mixed with other paths")
    return list(discover(paths, recursive=recursive, skip_dirs=skip_dirs))


def _open_session(model: Optional[str], device: str) -> ModelSession:
    try:
        card = load_card(model)
        return ModelSession(card, device=device)
    except (CardError, EngineError) as exc:
        fail_usage(str(exc))


def run_scoring(paths: list[str], *, model, device, batch_size, workers, recursive, no_cache,
                quiet, reject_at, accept_at, focus_check="rejected", on_result=None,
                skip_dirs=()) -> ScoringRun:
    if not paths:
        fail_usage("give at least one folder or photo, or - to read paths from stdin")
    if focus_check not in FOCUS_MODES:
        fail_usage(f"unknown --focus-check {focus_check!r}; use one of {', '.join(FOCUS_MODES)}")
    session = _open_session(model, device)
    entries = _entries(paths, recursive, list(skip_dirs))
    cache = None if no_cache else ResultCache(model_sha256=session.sha256)
    if cache is not None and cache.warning:
        stderr.print(f"[yellow]warning:[/] {cache.warning}")
    scorer = Scorer(session, Thresholds(reject_at=reject_at, accept_at=accept_at), cache,
                    batch_size=batch_size, workers=workers, focus=focus_check)
    results: list[ShotResult] = []
    started = time.perf_counter()
    progress = Progress(
        TextColumn("[bold]scoring[/]"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(), console=stderr, transient=True,
        disable=quiet or not stderr.is_terminal,
    )
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
    if cache is not None:
        if cache.warning:
            stderr.print(f"[yellow]warning:[/] {cache.warning}")
        cache.close()
    return ScoringRun(results, time.perf_counter() - started, reason_wording(session.card))


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
    tally = XmpTally()
    stream, target = open_output(output)
    writer = ResultWriter(fmt, stream)

    def on_result(result: ShotResult) -> None:
        writer.add(result)
        if write_xmp:
            tally.write(result, xmp_options)

    try:
        run = run_scoring(
            paths or [], model=model, device=device, batch_size=batch_size, workers=workers,
            recursive=recursive, no_cache=no_cache, quiet=quiet, reject_at=reject_at,
            accept_at=accept_at, focus_check=focus_check, on_result=on_result,
        )
        writer.close(console_for(stream) if fmt == "table" else None, run.wording)
    except BaseException:
        if target is not None:
            target.abort()
        raise
    finally:
        if target is None and stream is not sys.stdout:
            stream.close()  # a device or FIFO given as --output
    if target is not None:
        target.commit()
    _print_summary(run, quiet)
    if write_xmp and not quiet:
        stderr.print(tally.line())
    raise typer.Exit(EXIT_SOME_FAILED if run.failed or tally.failed else EXIT_OK)


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

    Every change is journaled first: `iqs undo FOLDER` puts the tree back exactly.
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
    run = run_scoring([str(folder)], model=model, device=device, batch_size=batch_size,
                      workers=workers, recursive=recursive, no_cache=no_cache, quiet=quiet,
                      reject_at=reject_at, accept_at=accept_at, focus_check=focus_check,
                      skip_dirs=[dest])
    scored = [r for r in run.results if r.ok]
    out = Console(highlight=False)
    _print_summary(run, quiet)
    if dry_run:
        out.print(f"dry run: would write labels for {len(scored)} shots "
                  f"({'in files' if in_file else sidecar_name + ' sidecars'})")
        if move_rejected:
            plan = cull.plan_moves(run.results, folder, dest)
            for line in plan.lines():
                out.print(f"would move {line}", soft_wrap=True)
            for problem in plan.problems:
                stderr.print(f"[yellow]note:[/] {problem}", soft_wrap=True)
        raise typer.Exit(EXIT_SOME_FAILED if run.failed else EXIT_OK)

    tally = XmpTally()
    moved = failed_moves = 0
    try:
        with cull.Journal.create(folder) as journal:
            for result in scored:
                tally.write(result, xmp_options, recorder=journal)
            if move_rejected:
                plan = cull.plan_moves(run.results, folder, dest)
                for problem in plan.problems:
                    stderr.print(f"[yellow]note:[/] {problem}", soft_wrap=True)
                report = cull.execute(plan, journal)
                moved, failed_moves = len(report.moved), len(report.failed)
                for _, message in report.failed:
                    stderr.print(f"[bold magenta]error:[/] {message}", soft_wrap=True)
    except cull.JournalError as exc:
        stderr.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        raise typer.Exit(EXIT_SOME_FAILED)
    out.print(tally.line())
    if move_rejected:
        shots = sum(1 for r in scored if r.label == "rejected")
        out.print(f"moved {moved} files of {shots} rejected shots to {dest}"
                  + (f", {failed_moves} could not be moved" if failed_moves else ""))
    out.print(f"undo with: iqs undo {folder}")
    problems = run.failed or tally.failed or failed_moves
    raise typer.Exit(EXIT_SOME_FAILED if problems else EXIT_OK)


@app.command("undo")
def undo_command(
    folder: Path = typer.Argument(..., help="The folder a previous `iqs cull` ran on."),
) -> None:
    """Undo the last `iqs cull` on FOLDER: move files back, restore or remove sidecars.

    Each undo goes one run further back.
    """
    if not folder.is_dir():
        fail_usage(f"{folder}: not a folder")
    try:
        report = cull.undo(folder)
    except (cull.CullError, cull.JournalError) as exc:
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
