"""Writing results: a rich table for people, JSON lines / JSON / CSV for scripts.

Machine formats carry reason tokens (`blur`, `underexposed`, ...); only the table shows their
human wording (iqs_cli/verdict.py, REASONS and `reason_wording`)."""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import IO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from iqs_cli.card import CLASSES
from iqs_cli.result import ShotResult
from iqs_cli.verdict import REASON_SEPARATOR, WORDING

FORMATS = ("auto", "table", "jsonl", "json", "csv")
LABEL_STYLES = {"rejected": "bold red", "pending": "yellow", "accepted": "bold green"}
CSV_COLUMNS = [
    "path", "files", "label", "p_rejected", "p_pending", "p_accepted", "mos", "stars",
    "reasons", "model", "model_version", "error",
]


def display_path(path: str) -> str:
    """Path relative to the working folder when it is below it (shorter in a table)."""
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return path if relative.startswith("..") else relative


def csv_row(result: ShotResult) -> list:
    probs = result.probabilities
    return [
        result.path, ";".join(result.files), result.label or "",
        *(probs.get(name, "") for name in CLASSES),
        "" if result.mos is None else result.mos, "" if result.stars is None else result.stars,
        REASON_SEPARATOR.join(result.reasons), result.model or "", result.model_version or "",
        result.error or "",
    ]


class AtomicTextFile:
    """A text file that appears complete at its path or not at all."""

    def __init__(self, path: Path):
        self.path = path
        folder = path.parent if str(path.parent) else Path(".")
        fd, self.temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
        self.handle = os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace", newline="")

    def commit(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        os.replace(self.temp, self.path)

    def abort(self) -> None:
        self.handle.close()
        try:
            os.unlink(self.temp)
        except FileNotFoundError:
            pass


class ResultWriter:
    """Streams machine formats as results arrive; renders the table at the end."""

    def __init__(self, fmt: str, stream: IO[str]):
        self.fmt = fmt
        self.stream = stream
        self.results: list[ShotResult] = []
        self._csv = csv.writer(stream) if fmt == "csv" else None
        if self._csv:
            self._csv.writerow(CSV_COLUMNS)

    def add(self, result: ShotResult) -> None:
        if self.fmt == "jsonl":
            self.stream.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
            self.stream.flush()
        elif self.fmt == "csv":
            self._csv.writerow(csv_row(result))
        else:
            self.results.append(result)

    def close(self, console: Console | None = None, wording: dict[str, str] | None = None) -> None:
        """wording: reason token -> human text for the table (default: verdict.WORDING)."""
        if self.fmt == "json":
            json.dump([r.to_dict() for r in self.results], self.stream, ensure_ascii=False, indent=2)
            self.stream.write("\n")
        elif self.fmt == "table":
            (console or Console(file=self.stream)).print(results_table(self.results, wording))
        self.stream.flush()


def stars_text(stars: int | None, label: str | None) -> Text:
    if stars is None:
        return Text("")
    if label == "rejected":
        return Text("reject", style="red")  # written as xmp:Rating -1
    return Text("★" * stars + "☆" * (5 - stars), style="yellow")


def reasons_text(reasons: list[str], wording: dict[str, str] | None = None) -> str:
    """Reason tokens in words for people; a token without wording is shown as it is."""
    wording = WORDING if wording is None else wording
    return REASON_SEPARATOR.join(wording.get(token, token) for token in reasons)


def results_table(results: list[ShotResult], wording: dict[str, str] | None = None) -> Table:
    table = Table(show_edge=False, header_style="bold", pad_edge=False)
    table.add_column("photo", overflow="fold")
    table.add_column("label")
    table.add_column("MOS", justify="right")
    table.add_column("rating")
    table.add_column("why / error", overflow="fold")
    scored = sorted((r for r in results if r.ok), key=lambda r: -(r.mos or 0.0))
    for r in scored:
        name = display_path(r.path)
        if len(r.files) > 1:
            name += f" (+{len(r.files) - 1})"
        table.add_row(
            name, Text(r.label or "", style=LABEL_STYLES.get(r.label or "", "")),
            f"{r.mos:.1f}", stars_text(r.stars, r.label), reasons_text(r.reasons, wording),
        )
    for r in results:
        if not r.ok:
            table.add_row(display_path(r.path), Text("error", style="bold magenta"), "", "",
                          Text(r.error or "", style="magenta"))
    return table


def summary_line(results_count: dict[str, int], failed: int, cached: int, seconds: float) -> Text:
    total = sum(results_count.values()) + failed
    text = Text()
    for label in ("accepted", "pending", "rejected"):
        text.append(f"{results_count.get(label, 0)} {label}", style=LABEL_STYLES[label])
        text.append(", ")
    text.append(f"{failed} failed", style="bold magenta" if failed else "")
    rate = total / seconds if seconds > 0 else 0.0
    text.append(f" — {total} shots in {seconds:.1f} s ({rate:.1f}/s)")
    if cached:
        text.append(f", {cached} from cache")
    return text


def open_output(path: Path | None) -> tuple[IO[str], AtomicTextFile | None]:
    if path is None or str(path) == "-":
        # Lone surrogates (non-UTF-8 file names) come out as \udcXX: valid inside JSON strings.
        if hasattr(sys.stdout, "reconfigure"):
            sys.stdout.reconfigure(errors="backslashreplace")
        return sys.stdout, None
    if path.exists() and not path.is_file():
        # /dev/null, a FIFO, a terminal: not a file to replace (replacing /dev/null as root
        # would turn it into a regular file), so write to it directly.
        return open(path, "w", encoding="utf-8", errors="backslashreplace", newline=""), None
    target = AtomicTextFile(path)
    return target.handle, target


def console_for(stream: IO[str]) -> Console:
    return Console(file=stream, soft_wrap=False, width=None if stream.isatty() else 160)
