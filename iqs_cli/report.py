"""Writing results: a rich table for people, JSON lines / JSON / CSV for scripts.

Machine formats carry reason tokens (`blur`, `underexposed`, ...); only the table shows their
human wording (REASONS in iqs_cli/vocabulary.py, `reason_wording` in iqs_cli/verdict.py)."""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path
from typing import IO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from iqs_cli.vocabulary import CLASSES
from iqs_cli.fsutil import create_temp, replace_durably
from iqs_cli.result import ShotResult
from iqs_cli.verdict import REASON_SEPARATOR
from iqs_cli.vocabulary import WORDING

FORMATS = ("auto", "table", "jsonl", "json", "csv")
LABEL_STYLES = {"rejected": "bold red", "pending": "yellow", "accepted": "bold green"}
CSV_COLUMNS = [
    "path", "files", "label", "p_rejected", "p_pending", "p_accepted", "mos", "stars",
    "reasons", "model", "model_version", "error", "group", "group_rank", "group_best",
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
        result.error or "", "" if result.group is None else result.group,
        "" if result.group_rank is None else result.group_rank, result.group_best or "",
    ]


class AtomicTextFile:
    """A text file written as it streams that appears complete at its path or not at all: a
    temporary file beside it (fsutil.create_temp) until `commit` renames it into place, durably
    (fsutil.replace_durably)."""

    def __init__(self, path: Path):
        self.path = path
        fd, self.temp = create_temp(path)
        self.handle = os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace", newline="")

    def commit(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        replace_durably(self.temp, self.path)

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
            console = console or Console(file=self.stream)
            console.print(results_table(self.results, wording, width=console.width))
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


def plural(count: int, word: str, many: str | None = None) -> str:
    """'1 shot', '2 shots' ('1 file restored', not '1 files restored')."""
    return f"{count} {word if count == 1 else (many or word + 's')}"


def common_folder(results: list[ShotResult]) -> str | None:
    """The folder that holds every result (the table shows paths relative to it)."""
    folders = [os.path.dirname(r.path) for r in results if os.path.isabs(r.path)]
    if not folders:
        return None
    try:
        return os.path.commonpath(folders)
    except ValueError:  # different drives (Windows)
        return None


def shot_name(result: ShotResult, base: str | None) -> str:
    """The scored file relative to `base`, and what else belongs to the shot: 'IMG_1.JPG +CR2'."""
    name = result.path
    if base is not None:
        relative = os.path.relpath(result.path, base)
        name = relative if not relative.startswith("..") else result.path
    others = [Path(f).suffix.lstrip(".") or Path(f).name for f in result.files
              if f != result.path]
    return name + "".join(f" +{other}" for other in others)


def shorten_middle(text: str, width: int) -> str:
    """`text` cut to `width` characters in the middle (the file name at the end is kept whole
    when it fits), marked with '…'."""
    if len(text) <= width:
        return text
    if width < 5:
        return text[:width]
    folder, sep, name = text.rpartition("/")
    if sep and len(name) + 2 <= width:
        return folder[: width - len(name) - 2] + "…/" + name
    keep = width - 1
    return text[: keep // 2] + "…" + text[len(text) - (keep - keep // 2):]


# Columns beside the photo: label (8), MOS with stars ("93.8 ★★★★★", 10) and the padding
# and rules between four columns (9).
_FIXED_COLUMNS = 8 + 10 + 9
_MIN_WHY = 20


# Marks before the frames of a burst in the table: its best frame first, the others below it.
BURST_MARKS = ("┌ ", "├ ", "└ ")


def table_order(scored: list[ShotResult]) -> list[tuple[ShotResult, str]]:
    """Scored shots best first (by MOS), each burst together where its best frame sorts, in
    rank order, with its mark (BURST_MARKS; "" for a shot in no burst)."""
    groups: dict[int, list[ShotResult]] = {}
    for r in scored:
        if r.group is not None:
            groups.setdefault(r.group, []).append(r)
    rows: list[tuple[ShotResult, str]] = []
    placed: set[int] = set()
    for r in sorted(scored, key=lambda r: -(r.mos or 0.0)):
        members = groups.get(r.group, []) if r.group is not None else []
        if len(members) < 2:
            rows.append((r, ""))
            continue
        if r.group in placed or (r.group_rank != 1 and any(m.group_rank == 1 for m in members)):
            continue  # placed with its best frame
        placed.add(r.group)
        members = sorted(members, key=lambda m: m.group_rank or 0)
        rows += [(m, BURST_MARKS[0 if i == 0 else 2 if i == len(members) - 1 else 1])
                 for i, m in enumerate(members)]
    return rows


def results_table(results: list[ShotResult], wording: dict[str, str] | None = None,
                  width: int = 120) -> Table:
    """The results for people, best first, errors last, in `width` columns: paths relative to
    the folder holding them all (the title names it), cut in the middle when too long."""
    base = common_folder(results)
    names = {id(r): shot_name(r, base) for r in results}
    longest = max((len(n) + (len(BURST_MARKS[0]) if r.group is not None else 0)
                   for r in results for n in [names[id(r)]]), default=5)
    photo_width = max(12, min(longest, width - _FIXED_COLUMNS - _MIN_WHY))
    table = Table(show_edge=False, header_style="bold", pad_edge=False,
                  title=f"in {base}" if base else None, title_justify="left",
                  title_style="dim")
    table.add_column("photo", no_wrap=True, max_width=photo_width)
    table.add_column("label", no_wrap=True)
    table.add_column("MOS  stars", no_wrap=True)
    table.add_column("why / error", overflow="fold")
    for r, mark in table_order([r for r in results if r.ok]):
        score = Text(f"{r.mos:4.1f} ")
        if r.label != "rejected":
            score.append_text(stars_text(r.stars, r.label))
        name = shorten_middle(names[id(r)], photo_width - len(mark))
        table.add_row(  # Text, not str: a file name like "[x]1.jpg" is not markup
            Text(mark) + Text(name),
            Text(r.label or "", style=LABEL_STYLES.get(r.label or "", "")),
            score, Text(reasons_text(r.reasons, wording)),
        )
    for r in results:
        if not r.ok:
            table.add_row(Text(shorten_middle(names[id(r)], photo_width)),
                          Text("error", style="bold magenta"), "",
                          Text(r.error or "", style="magenta"))
    return table


def summary_line(results_count: dict[str, int], failed: int, cached: int, seconds: float) -> Text:
    total = sum(results_count.values()) + failed
    text = Text()
    for label in reversed(CLASSES):  # accepted, pending, rejected
        text.append(f"{results_count.get(label, 0)} {label}", style=LABEL_STYLES[label])
        text.append(", ")
    text.append(f"{failed} failed", style="bold magenta" if failed else "")
    text.append(f" — {plural(total, 'shot')} in {seconds:.1f} s")
    scored = total - cached
    if scored >= 10 and seconds >= 1.0:  # a rate from a handful of photos says nothing
        text.append(f" ({scored / seconds:.1f}/s)")
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
    """A terminal's own width; in a file or pipe $COLUMNS, else 160 (wide enough not to cut)."""
    width = None if stream.isatty() else int(os.environ.get("COLUMNS") or 160)
    return Console(file=stream, soft_wrap=False, width=width)
