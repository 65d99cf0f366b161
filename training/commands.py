"""What `iqs train`, `iqs eval` and `iqs export` do, as plain functions (the typer CLI in
iqs_cli/cli.py parses options and calls these; torch is imported only from here on, by the
functions that need it).

A config is one JSON file: the datasets and their rules (training.datasets.combine), an
optional top-level "input" (the model's input, used when "train" has none) and the "train"
section (training.config.DEFAULTS lists every option).
"""

from __future__ import annotations

import json
import os
import shlex
import warnings
from pathlib import Path

from iqs_cli.card import CardError, plain_json, read_card, write_card
from iqs_cli.fsutil import replace_durably, write_atomic
from .config import TrainError, merge_config
from .datasets.base import DataWarning, DatasetError, Record
from .datasets.combine import load_combined
from .datasets.csvfile import DatasetWarning
from .evaluate import evaluate_model

# Below these many labelled photos a run still trains, but says so (docs/design.md: a
# 139-photo validation split already moves by +-0.04 SRCC from split to split).
MIN_TRAIN_PHOTOS = 200
MIN_SPLIT_PHOTOS = 30

# What a run tells its user about the data (the command line prints them as warnings).
USER_WARNINGS = (DataWarning, DatasetWarning)


class CommandError(Exception):
    """A command cannot run as asked (message says what to do)."""


def read_config(config: Path) -> dict:
    config = Path(config).expanduser()
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CommandError(f"cannot read config {config} ({exc.strerror or exc})") from exc
    except json.JSONDecodeError as exc:
        raise CommandError(f"config {config} is not valid JSON: {exc.msg} at line {exc.lineno}, "
                           f"column {exc.colno}") from exc
    if not isinstance(data, dict):
        raise CommandError(f"config {config} must hold a JSON object")
    return data


def train_section(config: dict) -> dict:
    """The config's `train` section, with the top-level "input" when it gives none."""
    section = config.get("train", {})
    if not isinstance(section, dict):
        raise CommandError("config \"train\" must be an object (see training/config.py DEFAULTS)")
    section = dict(section)
    if "input" not in section and "input" in config:
        section["input"] = config["input"]
    return section


def _load_data(config: dict, data_root: Path, allow_missing: bool = False):
    try:
        return load_combined(config, Path(data_root), allow_missing=allow_missing)
    except DatasetError as exc:
        raise CommandError(str(exc)) from exc


def _write_json(path: Path, data: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(plain_json(data), indent=2, allow_nan=False) + "\n")


def labelled_counts(data) -> dict[str, int]:
    """Photos with a MOS or a class in each split of a training.datasets.combine CombinedData."""
    return {split: sum(1 for r in data.split(split) if r.mos is not None or r.label is not None)
            for split in ("train", "val", "test")}


def data_warnings(counts: dict[str, int], source: str) -> list[str]:
    """Too little data, said with the numbers: `counts` from labelled_counts, `source` names
    where the photos come from (the config)."""
    found = []
    n = counts.get("train", 0)
    if 0 < n < MIN_TRAIN_PHOTOS:
        found.append(f"only {n} labelled photos for training (at least {MIN_TRAIN_PHOTOS} "
                     f"recommended; {source}): the model will follow these photos more than what "
                     "makes a photo good; rate more photos")
    for split in ("val", "test"):
        n = counts.get(split, 0)
        if 0 < n < MIN_SPLIT_PHOTOS:
            found.append(f"only {n} labelled photos in the {split!r} split (at least "
                         f"{MIN_SPLIT_PHOTOS} recommended; {source}): its SRCC and accuracy "
                         "are mostly chance; rate more photos or give the split a larger share")
    return found


def train(config: Path, data_root: Path, out_dir: Path, device: str = "cpu", resume: bool = False,
          epochs: int | None = None, progress: bool = True, allow_missing: bool = False,
          stop_after: int | None = None):
    """Train from a config; returns training.train.TrainResult (best.pt is what to export).

    epochs overrides the config's; stop_after ends this call after that many epochs (continue
    with resume=True: the result is the same as one uninterrupted run)."""
    # Here, not above: both import torch.
    from .export import git_commit
    from .train import train_model

    raw = read_config(config)
    try:
        merge_config(train_section(raw))  # a typo in "train" fails now, not after reading data
    except TrainError as exc:
        raise CommandError(f"{config}: {exc}") from exc
    data = _load_data(raw, data_root, allow_missing)
    if progress:
        print(data.summary(), flush=True)
    counts = labelled_counts(data)
    for message in data_warnings(counts, f"{Path(config).name} under {data_root}"):
        warnings.warn(DataWarning(message), stacklevel=2)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        _write_json(out_dir / "config.json", raw)  # what this run was made from
    run_info = {
        "config_path": str(Path(config).resolve()),
        "config_name": data.name,
        "data_root": str(Path(data_root).resolve()),
        "commit": git_commit(),
        "data_counts": data.counts,
    }
    try:
        result = train_model(train_section(raw), data.train, data.val, out_dir, device=device,
                             resume=resume, epochs=epochs, data_root=Path(data_root),
                             progress=progress, run_info=run_info, stop_after=stop_after)
    except (TrainError, DatasetError) as exc:
        raise CommandError(str(exc)) from exc
    result.split_sizes = counts
    return result


def export_hint(checkpoint: Path, config: Path, data_root: Path,
                split_sizes: dict[str, int]) -> tuple[str, Path, str | None]:
    """The `iqs export` command for a finished run, exactly as it can be run; the .onnx it
    writes (for `iqs score --model`); and a note on what its card will measure. Metrics come
    from the held-out 'test' split; a config without one (the shipped recipes) is measured on
    'val', which chose the best epoch; with neither the card gets no metrics."""
    checkpoint = Path(checkpoint)
    # Beside the run, named after it: the card's name is the stem, and nothing lands in the
    # current folder (or a checkout's weights/) by surprise.
    stem = checkpoint.parent / (checkpoint.parent.resolve().name or "model")
    words = ["iqs", "export", str(checkpoint), "--out", str(stem)]
    if split_sizes.get("test"):
        split, note = "test", None
    elif split_sizes.get("val"):
        split = "val"
        note = ("the config holds no 'test' photos, so the card's metrics come from the 'val' "
                "photos, which also chose the best epoch: they flatter the model a little")
    else:
        split = None
        note = ("the config holds no 'test' or 'val' photos: the card will carry no metrics "
                "(give the datasets a \"split\" share to measure the model)")
    if split is not None:
        words += ["--config", str(config), "--data-root", str(data_root), "--split", split]
    return shlex.join(words), stem.with_name(f"{stem.name}.onnx"), note


def evaluate(model: Path, config: Path, data_root: Path, split: str = "test", device: str = "cpu",
             out: Path | None = None, batch_size: int = 16, allow_missing: bool = False) -> dict:
    """Metrics of a model (.onnx with its card, or a checkpoint) on one split of the config's
    data: SRCC/PLCC/KRCC/RMSE per dataset, accuracy/macro-F1/confusion for classes."""
    data, records = _split_records(config, data_root, split, allow_missing)
    try:
        report = evaluate_model(Path(model), records, device=device, batch_size=batch_size)
    except (CardError, TrainError) as exc:
        raise CommandError(str(exc)) from exc
    report["split"] = split
    report["config"] = str(config)
    report["data"] = {name: counts[split] for name, counts in data.counts.items()}
    if out is not None:
        _write_json(Path(out), report)
    return report


def split_records(config: Path, data_root: Path, split: str) -> list[Record]:
    """The records of one split of the config's data (CommandError when it is empty)."""
    return _split_records(config, data_root, split)[1]


def _split_records(config: Path, data_root: Path, split: str, allow_missing: bool = False,
                   other_remedy: str = ""):
    """(the config's data, the records of one split), refusing an unknown or empty split."""
    if split not in ("train", "val", "test"):
        raise CommandError(f"split must be train, val or test, got {split!r}")
    data = _load_data(read_config(config), data_root, allow_missing)
    records: list[Record] = data.split(split)
    if not records:
        others = [name for name in ("test", "val") if name != split and data.split(name)]
        remedy = (f"use --split {others[0]}" if others
                  else "give the datasets a \"split\" share (\"val\", \"test\")")
        raise CommandError(f"{config}: the {split!r} split is empty under {data_root}; "
                           f"{remedy}{other_remedy}")
    return data, records


def card_metrics(report: dict) -> dict:
    """An evaluation report condensed for the card: dataset -> srcc, plcc, ... (+ split)."""
    metrics: dict = {}
    for section, keys in (("mos", ("n", "srcc", "plcc", "krcc", "rmse")),
                          ("class", ("n", "accuracy", "macro_f1", "confusion"))):
        for dataset, values in report.get(section, {}).items():
            entry = metrics.setdefault(dataset, {})
            for key in keys:
                if key in values:
                    entry[f"{'n_' + section if key == 'n' else key}"] = values[key]
    if "split" in report:
        metrics["split"] = report["split"]
    return metrics


def export(checkpoint: Path, out: Path, name: str | None = None, version: str = "0.1.0",
           metrics: Path | dict | None = None, config: Path | None = None,
           data_root: Path | None = None, split: str = "test", device: str = "cpu") -> Path:
    """Export a checkpoint to <out>.onnx + <out>.json. The card's metrics come from `metrics`
    (an `iqs eval` report: dict or JSON file), or, given config and data_root, from evaluating
    the exported ONNX model on the config's held-out `split` exactly as `iqs score` runs it.

    All or nothing: the model and its card are made under temporary names beside <out> and
    renamed into place only when the evaluation too has succeeded; a failure leaves <out>.onnx
    and <out>.json as they were (none, or the previous export)."""
    from .export import ExportError, export_model  # here, not above: it imports torch

    report = None
    if isinstance(metrics, (str, Path)):
        try:
            report = json.loads(Path(metrics).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CommandError(f"cannot read metrics report {metrics} ({exc}); pass the JSON "
                               "that `iqs eval --out` wrote") from exc
    elif isinstance(metrics, dict):
        report = metrics
    measure = report is None and config is not None and data_root is not None
    if measure:  # an empty split fails now, before minutes of export
        _split_records(config, data_root, split,
                       other_remedy=", or leave out --config to export without metrics")
    out = Path(out)
    if out.suffix.lower() in (".onnx", ".json"):
        out = out.with_suffix("")
    final_onnx, final_card = out.with_name(f"{out.name}.onnx"), out.with_name(f"{out.name}.json")
    staged = out.with_name(f".{out.name}.export-{os.getpid()}")
    staged_onnx, staged_card = staged.with_name(f"{staged.name}.onnx"), staged.with_name(f"{staged.name}.json")
    try:
        try:
            export_model(Path(checkpoint), staged, name=name or out.name, version=version,
                         metrics=card_metrics(report) if report else None, config_path=config)
        except (TrainError, ExportError, CardError) as exc:
            raise CommandError(str(exc)) from exc
        if measure:
            report = evaluate(staged_onnx, config, data_root, split=split, device=device)
            card = read_card(staged_card, staged_onnx)
            card.metrics = card_metrics(report)
            write_card(card, staged_card)
        # Both are whole on disk (written by write_atomic): only renames are left, the model
        # first, its card (which holds the model's sha256) last.
        replace_durably(staged_onnx, final_onnx)
        replace_durably(staged_card, final_card)
    finally:
        for path in (staged_onnx, staged_card):
            path.unlink(missing_ok=True)
    return final_onnx
