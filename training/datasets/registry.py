"""Reader names (as a config's "reader" names them) -> reader functions, and what kind of
photos each public dataset holds (which decides its default class rules)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Callable

from .ava import read_ava
from .base import DatasetError, Record
from .clive import read_clive
from .csvfile import read_csv
from .eva import read_eva
from .koniq import read_koniq10k
from .spaq import ATTRIBUTE_COLUMNS, read_spaq

Reader = Callable[..., list[Record]]

READERS: dict[str, Reader] = {
    "koniq10k": read_koniq10k,
    "spaq": read_spaq,
    "ava": read_ava,
    "eva": read_eva,
    "clive": read_clive,
    "csv": read_csv,
}

# "ordinary": snapshots rated for technical quality (low MOS = distorted);
# "artistic": photographs rated for aesthetics by photographers. The generic CSV has none:
# its config entry must say.
DEFAULT_KIND: dict[str, str] = {
    "koniq10k": "ordinary",
    "spaq": "ordinary",
    "clive": "ordinary",
    "ava": "artistic",
    "eva": "artistic",
}

# Attribute targets any reader can produce (defect severities in [0, 1]).
ATTRIBUTE_NAMES: tuple[str, ...] = tuple(ATTRIBUTE_COLUMNS)


def get_reader(name: str) -> Reader:
    try:
        return READERS[name]
    except KeyError:
        raise DatasetError(
            f"unknown dataset reader {name!r}; known readers: {', '.join(READERS)}"
        ) from None


def read_dataset(name: str, root: Path, labels: Path | str | None = None, **options) -> list[Record]:
    """Run the reader called `name`; a misspelled option is a DatasetError, not a TypeError."""
    reader = get_reader(name)
    accepted = [
        parameter
        for parameter, spec in inspect.signature(reader).parameters.items()
        if spec.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise DatasetError(
            f"{name}: unknown option(s) {', '.join(unknown)}; this reader takes "
            f"{', '.join(accepted)}"
        )
    return reader(root, labels, **options)
