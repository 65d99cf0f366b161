"""The `iqs` command: options in, calls to iqs_cli.workflow (and the training commands), output
out."""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from dataclasses import fields
from enum import Enum
from pathlib import Path
from typing import NoReturn, Optional

import typer
from typer.core import TyperCommand
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from iqs_cli import __version__, html_report, workflow, xmp
from iqs_cli.apply import ChangesError, apply_changes
from iqs_cli.bursts import DEFAULT_GAP
from iqs_cli.card import DEFAULT_MODEL_NAME, shipped_models_dir
from iqs_cli.engine import DEVICES
from iqs_cli.journal import FolderBusy, JournalError
from iqs_cli.learn import LearnOptions, TooFewLabels, learn
from iqs_cli.report import FORMATS, ResultWriter, console_for, open_output, plural, summary_line
from iqs_cli.scoring import FOCUS_MODES
from iqs_cli.undo import pending_above, undo

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

# How each kind of message starts on stderr (the kinds of workflow.Reporter, and "kept" of undo).
LOOKS = {"stop": "[bold red]error:[/]", "error": "[bold magenta]error:[/]",
         "warning": "[yellow]warning:[/]", "note": "[yellow]note:[/]",
         "skipped": "[yellow]note:[/]", "kept": "[green]kept:[/]",
         "conflict": "[yellow]kept:[/]"}  # undo left a file where another had come back


def say(kind: str, text: str) -> None:
    """One message on stderr; its text is shown as it is (a path like "[x] trip" is not markup)."""
    stderr.print(f"{LOOKS[kind]} {escape(text)}")


def fail_usage(message: str) -> NoReturn:
    say("stop", message)
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


def _undo_hint(roots: list[Path], out: Console) -> None:
    for root in roots:
        out.print(f"undo with: iqs undo {root}", soft_wrap=True, markup=False)


class Command(TyperCommand):
    """Help without Python type names (<list[str]>, <bool>) beside options: each option's
    metavar (NAME, N, P ...) and its text say what it takes, and flags take nothing. And what
    the workflows raise, as a message and an exit code."""

    def format_help(self, ctx, formatter) -> None:
        for param in self.get_params(ctx):  # the --help option too
            plain = getattr(param, "is_flag", False) or param.param_type_name == "argument"
            shown = None if plain else param.metavar
            param.display_type_rich = lambda ctx, shown=shown: shown
        super().format_help(ctx, formatter)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except TooFewLabels as exc:  # a fact about the photos, not a wrong option
            say("stop", str(exc))
            raise typer.Exit(EXIT_SOME_FAILED)
        except workflow.RunError as exc:
            fail_usage(str(exc))
        except (workflow.NoPhotos, FolderBusy, JournalError) as exc:
            say("stop", str(exc))
            raise typer.Exit(EXIT_BUSY if isinstance(exc, FolderBusy) else EXIT_SOME_FAILED)
        except workflow.Interrupted as stop:  # Ctrl-C: where it stopped, how to take it back
            stderr.print(f"[yellow]interrupted[/] {escape(stop.where)}" + (
                "; the changes made so far are in the undo journal" if stop.changed
                else "; nothing was changed"), soft_wrap=True)
            _undo_hint(stop.changed, stderr)
            raise typer.Exit(EXIT_INTERRUPTED)


class Terminal(workflow.Reporter):
    """The workflows' messages on stderr, and a progress bar and summary at a terminal."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet

    def message(self, kind: str, text: str) -> None:
        if not (self.quiet and kind == "skipped"):
            say(kind, text)

    @contextmanager
    def progress(self, total: int):
        bar = Progress(TextColumn("[bold]scoring[/]"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=stderr,
                       transient=True, disable=self.quiet or not stderr.is_terminal)
        started = time.perf_counter()
        with bar:
            task = bar.add_task("score", total=total, rate="")

            def advance() -> None:
                done = bar.tasks[0].completed + 1
                rate = done / max(time.perf_counter() - started, 1e-6)
                bar.update(task, advance=1, rate=f"{rate:.1f}/s")

            yield advance

    def summary(self, run: workflow.ScoringRun) -> None:
        """The counts and time, for a person at a terminal (a log or a pipe has the records)."""
        if not self.quiet and stderr.is_terminal:
            cached = sum(1 for r in run.results if r.cached)
            stderr.print(summary_line(run.counts(), len(run.failed), cached, run.seconds))


def _probability(value: Optional[float]) -> Optional[float]:
    if value is not None and not 0.0 <= value <= 1.0:
        raise typer.BadParameter(f"{value:g} is not a probability: give a number from 0 to 1 "
                                 f"(e.g. {value / 100:g} for {value:g} %)"
                                 if 1.0 < value <= 100.0 else
                                 f"{value:g} is not a probability: give a number from 0 to 1")
    return value


def _seconds(value: float) -> float:
    if value < 0 or value != value:  # NaN is no number of seconds either
        raise typer.BadParameter(f"{value:g} is not a number of seconds: give 0 or more")
    return value


def _choices(name: str, values: tuple[str, ...]) -> type[Enum]:
    """An option's fixed values, any case accepted (typer.Option(case_sensitive=False))."""
    return Enum(name, {value: value for value in values}, type=str)


def _options(params: dict, *kinds: type) -> list:
    """Each workflow options dataclass in `kinds`, made from the command's parameters of the
    same names (choices as their plain values); a field the command has no option for keeps
    its default."""
    plain = {k: v.value if isinstance(v, Enum) else v for k, v in params.items()}
    return [kind(**{f.name: plain[f.name] for f in fields(kind) if f.name in plain})
            for kind in kinds]


INPUT, MODEL, OUTPUT, LABELS, MOVING = "Input", "Model", "Output", "XMP labels", "Moving"
BURSTS = "Bursts"
Format, Device = _choices("Format", FORMATS), _choices("Device", DEVICES)
Sidecar, Focus = _choices("Sidecar", xmp.SIDECAR_STYLES), _choices("Focus", FOCUS_MODES)


def _shipped() -> str:
    try:
        names = sorted(p.stem for p in shipped_models_dir().glob("*.onnx"))
    except (ModuleNotFoundError, OSError):
        names = []
    return ", ".join(f"{n} (default)" if n == DEFAULT_MODEL_NAME else n for n in names) or "none"


# Options shared by `score` and `cull` (typer reads them from each command's signature; their
# names are the fields of workflow.ScoreOptions and workflow.XmpOptions).
ModelOpt = typer.Option(None, "--model", "-m", metavar="NAME|PATH", rich_help_panel=MODEL, help=f"{_shipped()}, or a .onnx file with its .json card beside it.")
DeviceOpt = typer.Option("cpu", "--device", metavar="DEVICE", case_sensitive=False, rich_help_panel=MODEL, show_default=False, help="cpu (default), cuda, or auto (CUDA if there).")
BatchOpt = typer.Option(None, "--batch-size", min=1, metavar="N", rich_help_panel=MODEL, show_default=False, help="Photos per inference call (2 on a CPU, 16 on a GPU).")
WorkersOpt = typer.Option(None, "--workers", min=1, metavar="N", rich_help_panel=MODEL, help="Decoding threads (default: one per core).")
RecursiveOpt = typer.Option(True, "--recursive/--no-recursive", rich_help_panel=INPUT, show_default=False, help="Walk subfolders (default: yes).")
NoCacheOpt = typer.Option(False, "--no-cache", rich_help_panel=INPUT, help="Score again; leave the results cache alone.")
QuietOpt = typer.Option(False, "--quiet", "-q", rich_help_panel=OUTPUT, help="No progress bar or summary.")
RejectAtOpt = typer.Option(None, "--reject-at", metavar="P", callback=_probability, rich_help_panel=MODEL, help="Reject when P(rejected) >= P (0-1; default: the card's).")
AcceptAtOpt = typer.Option(None, "--accept-at", metavar="P", callback=_probability, rich_help_panel=MODEL, help="Accept only when P(accepted) >= P (0-1).")
SidecarOpt = typer.Option("digikam", "--sidecar-name", metavar="STYLE", case_sensitive=False, rich_help_panel=LABELS, show_default=False, help="digikam (default): photo.ext.xmp; lightroom: photo.xmp.")
InFileOpt = typer.Option(False, "--in-file", rich_help_panel=LABELS, help="Into JPEG/TIFF/PNG/WebP themselves (RAW: a sidecar).")
ColorOpt = typer.Option(False, "--color-labels", rich_help_panel=LABELS, help="Also color labels: red, yellow, green.")
FocusOpt = typer.Option("rejected", "--focus-check", metavar="MODE", case_sensitive=False, rich_help_panel=MODEL, show_default=False, help="Second look at the sharpest region: rejected (default: at rejected shots), all (also missed focus; slower) or off.")
OverwriteOpt = typer.Option(False, "--overwrite", rich_help_panel=LABELS, help="Replace labels a person set (kept by default).")
NoBurstsOpt = typer.Option(False, "--no-bursts", rich_help_panel=BURSTS, help="Do not group bursts (grouped, the sharpest frame keeps its label).")
BurstGapOpt = typer.Option(DEFAULT_GAP, "--burst-gap", metavar="SECONDS", callback=_seconds, rich_help_panel=BURSTS, help="Most seconds between burst frames.")
SimilarOnlyOpt = typer.Option(False, "--similar-only", rich_help_panel=BURSTS, help="Group alike shots at any time apart.")
RejectDuplicatesOpt = typer.Option(False, "--reject-duplicates", rich_help_panel=BURSTS, help="Reject a burst's other frames.")

# What an --output file's extension says about its format (anything else needs --format).
FORMAT_OF_SUFFIX = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def _resolve_format(fmt: str, output: Optional[Path]) -> str:
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


@contextmanager
def _results_to(output: Optional[Path]):
    """Stdout, or --output written whole or not at all (a device or FIFO: as it comes)."""
    stream, target = open_output(output)
    try:
        yield stream
    except BaseException:
        if target is not None:
            target.abort()
        raise
    finally:
        if target is None and stream is not sys.stdout:
            stream.close()
    if target is not None:
        target.commit()


@app.command(cls=Command)
def score(
    paths: list[str] = typer.Argument(None, metavar="PATH", show_default=False, help="Folders, photos, or - to read paths from stdin (find ... | iqs score -)."),
    recursive: bool = RecursiveOpt,
    no_cache: bool = NoCacheOpt,
    model: Optional[str] = ModelOpt,
    device: Device = DeviceOpt,
    batch_size: Optional[int] = BatchOpt,
    workers: Optional[int] = WorkersOpt,
    reject_at: Optional[float] = RejectAtOpt,
    accept_at: Optional[float] = AcceptAtOpt,
    focus_check: Focus = FocusOpt,
    fmt: Format = typer.Option("auto", "--format", "-f", metavar="FORMAT", case_sensitive=False, rich_help_panel=OUTPUT, show_default=False, help="table, jsonl, json or csv (default: table on a terminal, else jsonl, or -o's extension)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", metavar="FILE", rich_help_panel=OUTPUT, help="Write results to FILE (.csv, .json, .jsonl), whole or not at all."),
    quiet: bool = QuietOpt,
    write_xmp: bool = typer.Option(False, "--write-xmp", rich_help_panel=LABELS, help="Also write XMP labels (`iqs undo` takes them back)."),
    style: Sidecar = SidecarOpt,
    in_file: bool = InFileOpt,
    color_labels: bool = ColorOpt,
    overwrite: bool = OverwriteOpt,
    no_bursts: bool = NoBurstsOpt,
    burst_gap: float = BurstGapOpt,
    similar_only: bool = SimilarOnlyOpt,
    reject_duplicates: bool = RejectDuplicatesOpt,
) -> None:
    """Score photos: label (rejected / pending / accepted), MOS 0-100, stars, reasons."""
    options, labels = _options(locals(), workflow.ScoreOptions, workflow.XmpOptions)
    fmt, reporter = _resolve_format(fmt.value, output), Terminal(quiet)
    shots = workflow.find_shots(paths or [], recursive, reporter=reporter)
    with _results_to(output) as stream:
        writer = ResultWriter(fmt, stream)
        run = workflow.score(shots, options, labels if write_xmp else None, reporter, writer.add)
        writer.close(console_for(stream) if fmt == "table" else None, run.wording)
    reporter.summary(run)
    if run.labels is not None and not quiet:
        stderr.print(run.labels.line())
        _undo_hint(run.changed, stderr)
    raise typer.Exit(EXIT_OK if run.ok else EXIT_SOME_FAILED)


@app.command("cull", cls=Command)
def cull_command(
    folder: Path = typer.Argument(..., metavar="FOLDER", show_default=False, help="The folder to cull (walked recursively unless --no-recursive)."),
    recursive: bool = RecursiveOpt,
    no_cache: bool = NoCacheOpt,
    model: Optional[str] = ModelOpt,
    device: Device = DeviceOpt,
    batch_size: Optional[int] = BatchOpt,
    workers: Optional[int] = WorkersOpt,
    reject_at: Optional[float] = RejectAtOpt,
    accept_at: Optional[float] = AcceptAtOpt,
    focus_check: Focus = FocusOpt,
    quiet: bool = QuietOpt,
    style: Sidecar = SidecarOpt,
    in_file: bool = InFileOpt,
    color_labels: bool = ColorOpt,
    overwrite: bool = OverwriteOpt,
    no_bursts: bool = NoBurstsOpt,
    burst_gap: float = BurstGapOpt,
    similar_only: bool = SimilarOnlyOpt,
    reject_duplicates: bool = RejectDuplicatesOpt,
    move_rejected: bool = typer.Option(False, "--move-rejected", rich_help_panel=MOVING, help="Move rejected shots, whole, to FOLDER/_rejected/."),
    to: Optional[Path] = typer.Option(None, "--to", metavar="FOLDER", rich_help_panel=MOVING, help="... or to this folder (outside FOLDER)."),
    dry_run: bool = typer.Option(False, "--dry-run", rich_help_panel=MOVING, help="Print the plan; change nothing."),
    report: Optional[Path] = typer.Option(None, "--report", metavar="FILE", rich_help_panel=OUTPUT, help="Also write an HTML page to look at the verdicts (as `iqs report`)."),
) -> None:
    """Score a folder, write XMP labels, and (with --move-rejected) move rejected shots away.

    Every change is journaled first: `iqs undo FOLDER` puts the tree back exactly.

    Shots a person rated or labelled stay where they are (unless --overwrite).
    """
    options = _options(locals(), workflow.ScoreOptions, workflow.XmpOptions, workflow.CullOptions)
    reporter = Terminal(quiet)
    outcome = workflow.cull(folder, *options, reporter=reporter)
    reporter.summary(outcome.run)
    if outcome.stopped is not None:
        say("stop", outcome.stopped)
    out = Console(highlight=False, soft_wrap=True)
    for line in outcome.lines():
        out.print(line, markup=False)
    _undo_hint(outcome.run.changed, out)
    page_ok = True
    if report is not None:
        report_run = workflow.cull_report(outcome, folder)
        _report_line(workflow.write_report(report_run, report, reporter), report, out)
        page_ok = report_run.ok
    raise typer.Exit(EXIT_OK if outcome.ok and page_ok else EXIT_SOME_FAILED)


def _report_line(page, output: Path, out: Console) -> None:
    size = output.stat().st_size if output.is_file() else len(page.html.encode())
    out.print(f"wrote {output} ({plural(page.shots, 'shot')}, {size / 1e6:.1f} MB): open "
              f"{output.resolve().as_uri()} in a browser", markup=False)


@app.command("report", cls=Command)
def report_command(
    paths: list[str] = typer.Argument(..., metavar="PATH", show_default=False, help="Folders (or photos) to show; shots `iqs cull` moved out of a folder are shown too."),
    output: Path = typer.Option(Path("iqs-report.html"), "--output", "-o", metavar="FILE", rich_help_panel=OUTPUT, help="The HTML page to write, whole or not at all."),
    thumb_size: int = typer.Option(html_report.THUMB_SIZE, "--thumb-size", min=64, max=1024, metavar="PX", rich_help_panel=OUTPUT, help="Long side of the thumbnails in the page (its size grows with it)."),
    recursive: bool = RecursiveOpt,
    no_cache: bool = NoCacheOpt,
    model: Optional[str] = ModelOpt,
    device: Device = DeviceOpt,
    batch_size: Optional[int] = BatchOpt,
    workers: Optional[int] = WorkersOpt,
    reject_at: Optional[float] = RejectAtOpt,
    accept_at: Optional[float] = AcceptAtOpt,
    focus_check: Focus = FocusOpt,
    no_bursts: bool = NoBurstsOpt,
    burst_gap: float = BurstGapOpt,
    similar_only: bool = SimilarOnlyOpt,
    reject_duplicates: bool = RejectDuplicatesOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Write one HTML page to look at the verdicts: a tile per shot, filters, a large view,
    and labels you set with the keyboard, saved as a changes file for `iqs apply`.

    Scores through the results cache: a folder already scored is not scored again.
    """
    options = _options(locals(), workflow.ScoreOptions)[0]
    reporter = Terminal(quiet)
    report_run = workflow.report(paths, options, reporter)
    reporter.summary(report_run.run)
    page = workflow.write_report(report_run, output, reporter, thumb_size=thumb_size,
                                 workers=workers)
    _report_line(page, output, Console(highlight=False, soft_wrap=True))
    raise typer.Exit(EXIT_OK if report_run.ok else EXIT_SOME_FAILED)


@app.command("apply", cls=Command)
def apply_command(
    changes: Path = typer.Argument(..., metavar="CHANGES", show_default=False, help="The changes file a report page saved (changes.json)."),
    style: Sidecar = SidecarOpt,
) -> None:
    """Write the labels you set on a report page as XMP labels: yours, so iqs keeps them.

    Every change is journaled first: `iqs undo FOLDER` takes them back.
    """
    try:
        result = apply_changes(changes, style.value)
    except ChangesError as exc:
        fail_usage(str(exc))
    for line in result.errors:
        say("error", line)
    if result.stopped is not None:
        say("stop", result.stopped)
    out = Console(highlight=False, soft_wrap=True)
    out.print(f"labelled {plural(result.applied, 'shot')} ({plural(result.files, 'file')})"
              + (f"; {plural(len(result.errors), 'change')} failed (named above)"
                 if result.errors else ""), markup=False)
    _undo_hint(result.changed, out)
    raise typer.Exit(EXIT_BUSY if result.busy else EXIT_OK if result.ok else EXIT_SOME_FAILED)


def _learned(outcome, out: Console) -> None:
    """What `iqs learn` found and how the new model does, for people."""
    counts = outcome.counts
    out.print(f"your labels: {counts['rejected']} rejected, {counts['keeper']} kept "
              f"({plural(counts['unlabelled'], 'photo')} without a label of yours"
              + (f", {counts['failed']} could not be read" if counts["failed"] else "") + ")",
              markup=False)
    out.print("  from: " + ", ".join(f"{how} {n}" for how, n in outcome.sources.most_common()),
              markup=False)
    table = Table(title=f"held out ({outcome.held_out['folds']} folds: each photo judged by a "
                  "model that never saw its label)", title_justify="left", box=None)
    for column in ("model", "agrees with you", "your keepers rejected", "your rejects caught"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for who, name in (("personal", outcome.path.stem), ("base", outcome.base)):
        f = outcome.held_out[who]
        keepers, rejects = counts["keeper"], counts["rejected"]
        table.add_row(name, f"{f['accuracy']:.1%}",
                      f"{f['keepers_rejected']:.1%} ({f['keepers_rejected_count']} of {keepers})",
                      f"{f['rejects_caught']:.1%} ({f['rejects_caught_count']} of {rejects})")
    out.print(table)
    out.print(f"{outcome.path.stem} rejects at P(rejected) >= {outcome.reject_at:.2f}: the "
              f"lowest that rejects at most {outcome.max_keepers_rejected:.0%} of your keepers "
              "out of fold", markup=False)
    out.print(f"{'replaced' if outcome.replaced else 'saved'} {outcome.path}; use it with "
              f"iqs score DIR --model {outcome.path.stem} (or iqs cull)", markup=False)


@app.command("learn", cls=Command)
def learn_command(
    paths: list[str] = typer.Argument(..., metavar="DIR", show_default=False, help="Folders (or photos) with your own pick labels or ratings."),
    name: str = typer.Option("mine", "--name", metavar="NAME", help="Save the model as NAME; use it with --model NAME."),
    recursive: bool = RecursiveOpt,
    no_cache: bool = NoCacheOpt,
    model: Optional[str] = typer.Option(None, "--model", "-m", metavar="NAME|PATH", rich_help_panel=MODEL, help=f"The base model whose features it learns from: {_shipped()}, or a .onnx file."),
    device: Device = DeviceOpt,
    batch_size: Optional[int] = BatchOpt,
    workers: Optional[int] = WorkersOpt,
    min_labels: int = typer.Option(50, "--min-labels", min=2, metavar="N", rich_help_panel=MODEL, help="Refuse with fewer than N rejected or N kept photos."),
    max_keepers_rejected: float = typer.Option(0.05, "--max-keepers-rejected", metavar="P", callback=_probability, rich_help_panel=MODEL, help="Reject at the lowest threshold that rejects at most this share of your keepers (0-1)."),
    as_json: bool = typer.Option(False, "--json", rich_help_panel=OUTPUT, help="Print what it found as JSON on stdout."),
    quiet: bool = QuietOpt,
) -> None:
    """Learn your taste from the labels you set (digiKam, darktable, Lightroom) as a model."""
    options = LearnOptions(name=name, model=model, device=device.value, batch_size=batch_size,
                           workers=workers, recursive=recursive, no_cache=no_cache,
                           min_labels=min_labels, max_keepers_rejected=max_keepers_rejected)
    outcome = learn(paths, options, Terminal(quiet))
    if as_json:
        print(json.dumps(outcome.to_dict(), indent=2))
    else:
        _learned(outcome, Console(highlight=False, soft_wrap=True))
    raise typer.Exit(EXIT_OK if not outcome.counts["failed"] else EXIT_SOME_FAILED)


@app.command("undo", cls=Command)
def undo_command(
    folder: Path = typer.Argument(..., metavar="FOLDER", show_default=False, help="The folder a previous `iqs cull` or `iqs score --write-xmp` ran on."),
) -> None:
    """Undo the last `iqs cull` or `iqs score --write-xmp` on FOLDER: move files back, restore
    or remove sidecars.

    Each undo goes one run further back; an interrupted undo can simply be run again.
    """
    workflow.check_folder(folder)
    report = undo(folder)
    out = Console(highlight=False, soft_wrap=True, markup=False)  # paths, not markup
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
        say("conflict", line)
    for line in report.errors:
        say("error", line)
    if report.errors:
        stderr.print(f"fix what is named above, then run `iqs undo {folder}` again: it goes on "
                     "where this one stopped", markup=False)
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

    commands = _training()
    said: list[str] = []
    shown_by_python = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        # What the data lacks is the user's business: one plain line, not Python's file:line.
        if not issubclass(category, commands.USER_WARNINGS):
            return shown_by_python(message, category, filename, lineno, file, line)
        said.append(str(message))
        say("warning", str(message))

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
    from iqs_cli.card import plain_json

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
