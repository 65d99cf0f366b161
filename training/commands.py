"""What `iqs train`, `iqs eval` and `iqs export` do, as plain functions (the typer CLI in
iqs_cli/cli.py parses options and calls these; torch is imported only from here on).

A config is one JSON file: the datasets and their rules (training.datasets.combine), an
optional top-level "input" (the model's input, used when "train" has none) and the "train"
section (training.train.DEFAULTS lists every option).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from training.datasets.base import DatasetError, Record


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
        raise CommandError("config \"train\" must be an object (see training/train.py DEFAULTS)")
    section = dict(section)
    if "input" not in section and "input" in config:
        section["input"] = config["input"]
    return section


def _load_data(config: dict, data_root: Path, allow_missing: bool = False):
    from training.datasets.combine import load_combined

    try:
        return load_combined(config, Path(data_root), allow_missing=allow_missing)
    except DatasetError as exc:
        raise CommandError(str(exc)) from exc


def _write_json(path: Path, data: dict) -> None:
    from training.evaluate import plain_json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(plain_json(data), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def train(config: Path, data_root: Path, out_dir: Path, device: str = "cpu", resume: bool = False,
          epochs: int | None = None, progress: bool = True, allow_missing: bool = False,
          stop_after: int | None = None):
    """Train from a config; returns training.train.TrainResult (best.pt is what to export).

    epochs overrides the config's; stop_after ends this call after that many epochs (continue
    with resume=True: the result is the same as one uninterrupted run)."""
    from training.export import git_commit
    from training.train import TrainError, merge_config, train_model

    raw = read_config(config)
    try:
        merge_config(train_section(raw))  # a typo in "train" fails now, not after reading data
    except TrainError as exc:
        raise CommandError(f"{config}: {exc}") from exc
    data = _load_data(raw, data_root, allow_missing)
    if progress:
        print(data.summary(), flush=True)
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
        return train_model(train_section(raw), data.train, data.val, out_dir, device=device,
                           resume=resume, epochs=epochs, data_root=Path(data_root),
                           progress=progress, run_info=run_info, stop_after=stop_after)
    except (TrainError, DatasetError) as exc:
        raise CommandError(str(exc)) from exc


def evaluate(model: Path, config: Path, data_root: Path, split: str = "test", device: str = "cpu",
             out: Path | None = None, batch_size: int = 16, allow_missing: bool = False) -> dict:
    """Metrics of a model (.onnx with its card, or a checkpoint) on one split of the config's
    data: SRCC/PLCC/KRCC/RMSE per dataset, accuracy/macro-F1/confusion for classes."""
    from iqs_cli.card import CardError
    from training.evaluate import evaluate_model
    from training.train import TrainError

    if split not in ("train", "val", "test"):
        raise CommandError(f"split must be train, val or test, got {split!r}")
    raw = read_config(config)
    data = _load_data(raw, data_root, allow_missing)
    records: list[Record] = data.split(split)
    if not records:
        raise CommandError(f"the config's {split!r} split is empty under {data_root}; "
                           "choose another --split or give the datasets a test share")
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
    the exported ONNX model on the config's held-out `split` exactly as `iqs score` runs it."""
    from iqs_cli.card import CardError, card_from_dict
    from training.export import ExportError, export_model
    from training.train import TrainError

    report = None
    if isinstance(metrics, (str, Path)):
        try:
            report = json.loads(Path(metrics).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CommandError(f"cannot read metrics report {metrics} ({exc}); pass the JSON "
                               "that `iqs eval --out` wrote") from exc
    elif isinstance(metrics, dict):
        report = metrics
    try:
        onnx_path = export_model(Path(checkpoint), Path(out), name=name, version=version,
                                 metrics=card_metrics(report) if report else None,
                                 config_path=config)
    except (TrainError, ExportError, CardError) as exc:
        raise CommandError(str(exc)) from exc
    if report is None and config is not None and data_root is not None:
        report = evaluate(onnx_path, config, data_root, split=split, device=device)
        card_path = onnx_path.with_suffix(".json")
        data = json.loads(card_path.read_text(encoding="utf-8"))
        data["metrics"] = card_metrics(report)
        card_from_dict(data, onnx_path)
        _write_json(card_path, data)
    return onnx_path
