"""Predictions of a model on labelled records and the metrics report of `iqs eval`.

A model is either an exported `.onnx` (with its card), run through ONNX Runtime with exactly the
preprocessing of `iqs score` (the command's decoder + the card's `image_to_tensor`), or a
training checkpoint (`best.pt` / `last.pt`), run in torch with the same preprocessing.

Report layout (plain JSON):
  {"n": images scored, "errors": [{"path", "error"}...],
   "mos":   {"all": {n, srcc, krcc, plcc, plcc_logistic, rmse}, "<dataset>": {...}},
   "class": {"all": {n, accuracy, macro_f1, confusion}, "<dataset>": {...}},
   "confusion_by_dataset": {"<dataset>": 3x3 counts, rows true, columns predicted},
   "predicted_classes": {"<dataset>": [rejected, pending, accepted counts]},
   "attributes": {"<name>": {n, srcc, mae}}}
The per-dataset confusion matrices (rows = true class) and predicted-class counts show a model
that learned "which dataset" instead of quality: every photo of one dataset in one class.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from iqs_cli.card import load_card
from iqs_cli.vocabulary import (CLASSES, ONNX_INPUT, OUTPUT_ATTRIBUTES, OUTPUT_CLASS_LOGITS,
                                OUTPUT_MOS)
from . import metrics as M
from .datasets.base import Record
from .datasets.combine import confusion_by_dataset


@dataclass
class Predictions:
    mos: np.ndarray  # [N] 0-100
    probabilities: np.ndarray  # [N, 3]
    attributes: np.ndarray | None = None  # [N, K]
    valid: np.ndarray | None = None  # [N] bool: False where the image could not be read
    errors: list[dict] = field(default_factory=list)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=1, keepdims=True)


def predict_model(model, dataset, device, batch_size: int = 32, num_workers: int = 0,
                  store=None) -> Predictions:
    """Torch model (eval mode) over a RecordDataset (train=False), or over cached features."""
    import torch  # here, not above: the CLI imports this module for plain_json, without torch
    from torch.utils.data import DataLoader

    was_training = model.training
    model.eval()
    mos, logits, attrs = [], [], []
    with torch.no_grad():
        if store is not None:
            batches = (store.batch(range(i, min(i + batch_size, len(store))), device)
                       for i in range(0, len(store), batch_size))
        else:
            batches = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        for batch in batches:
            if store is not None:
                out = model.forward_suffix(batch["fmap"], batch["pooled"])
            else:
                out = model(batch[ONNX_INPUT].to(device))
            mos.append(out[OUTPUT_MOS].float().cpu().numpy())
            logits.append(out[OUTPUT_CLASS_LOGITS].float().cpu().numpy())
            attrs.append(out[OUTPUT_ATTRIBUTES].float().cpu().numpy())
    model.train(was_training)
    attributes = np.concatenate(attrs) if attrs else None
    if attributes is not None and attributes.shape[1] == 0:
        attributes = None
    return Predictions(np.concatenate(mos), _softmax(np.concatenate(logits)), attributes,
                       np.ones(sum(len(m) for m in mos), dtype=bool))


def predict_onnx(onnx_path: Path, records: Sequence[Record], device: str = "cpu",
                 batch_size: int = 16) -> Predictions:
    """What `iqs score` computes for each record's file (decode errors are reported, not raised)."""
    # Here, not above (see predict_model): training.data imports torch, the engine ONNX Runtime.
    from iqs_cli.decode import DecodeError
    from iqs_cli.engine import ModelSession
    from .data import record_tensor

    card = load_card(Path(onnx_path))
    session = ModelSession(card, device=device)
    n = len(records)
    k = len(card.attributes)
    mos = np.full(n, np.nan, np.float32)
    probs = np.full((n, 3), np.nan, np.float32)
    attributes = np.full((n, k), np.nan, np.float32) if k else None
    valid = np.zeros(n, dtype=bool)
    errors = []

    def flush(items: list[tuple[int, np.ndarray]]) -> None:
        if not items:
            return
        out = session.infer(np.stack([t for _, t in items]))
        for row, (index, _) in enumerate(items):
            mos[index] = out.mos[row]
            probs[index] = out.probabilities[row]
            if attributes is not None and out.attributes is not None:
                attributes[index] = out.attributes[row]
            valid[index] = True

    def decode(record: Record):
        try:
            return record_tensor(Path(record.path), card.input)
        except (DecodeError, OSError) as exc:
            return exc

    pending: dict[tuple, list[tuple[int, np.ndarray]]] = {}
    chunk = max(1, batch_size) * 4  # decoded tensors held at once stay bounded
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        for start in range(0, n, chunk):
            part = records[start:start + chunk]
            for offset, tensor in enumerate(pool.map(decode, part)):
                index = start + offset
                if isinstance(tensor, Exception):
                    errors.append({"path": str(records[index].path), "error": str(tensor)})
                    continue
                group = pending.setdefault(tensor.shape, [])
                group.append((index, tensor))
                if len(group) >= batch_size:
                    flush(group)
                    pending[tensor.shape] = []
    for group in pending.values():
        flush(group)
    return Predictions(mos, probs, attributes, valid, errors)


def predict_checkpoint(checkpoint: Path, records: Sequence[Record], device: str = "cpu",
                       batch_size: int = 16, num_workers: int = 0) -> tuple[Predictions, dict]:
    """Predictions of a checkpoint's export weights, and the checkpoint's contents."""
    # Here, not above: both import torch (see predict_model).
    from .checkpoint import checkpoint_input, load_checkpoint, resolve_device
    from .data import RecordDataset

    dev = resolve_device(device)
    model, state = load_checkpoint(checkpoint, dev)
    dataset = RecordDataset(records, checkpoint_input(state), train=False,
                            attributes=state["attributes"])
    return predict_model(model, dataset, dev, batch_size, num_workers), state


def metrics_report(records: Sequence[Record], preds: Predictions,
                   attribute_names: Sequence[str] = ()) -> dict:
    valid = preds.valid if preds.valid is not None else np.ones(len(records), dtype=bool)
    report: dict = {"n": int(valid.sum()), "errors": list(preds.errors)}
    datasets = sorted({r.dataset for r in records})
    dataset_of = np.array([r.dataset for r in records])
    predicted = np.argmax(np.nan_to_num(preds.probabilities, nan=-1.0), axis=1)

    has_mos = valid & np.array([r.mos is not None for r in records], dtype=bool)
    if has_mos.any():
        target = np.array([r.mos if r.mos is not None else np.nan for r in records], dtype=np.float64)
        report["mos"] = {"all": M.mos_metrics(preds.mos[has_mos], target[has_mos])}
        for name in datasets:
            mask = has_mos & (dataset_of == name)
            if mask.any():
                report["mos"][name] = M.mos_metrics(preds.mos[mask], target[mask])

    has_label = valid & np.array([r.label is not None for r in records], dtype=bool)
    if has_label.any():
        kept = np.flatnonzero(valid)
        report["confusion_by_dataset"] = confusion_by_dataset(
            [records[i] for i in kept], predicted[kept].tolist())
        labels = np.array([r.label if r.label is not None else -1 for r in records], dtype=np.int64)
        report["class"] = {"all": M.class_metrics(predicted[has_label], labels[has_label])}
        for name in datasets:
            mask = has_label & (dataset_of == name)
            if mask.any():
                report["class"][name] = M.class_metrics(predicted[mask], labels[mask])

    report["predicted_classes"] = {
        name: np.bincount(predicted[valid & (dataset_of == name)], minlength=len(CLASSES)).tolist()
        for name in datasets
    }

    if preds.attributes is not None and attribute_names:
        attr_report = {}
        for k, name in enumerate(attribute_names):
            target = np.array([r.attributes.get(name, np.nan) for r in records], dtype=np.float64)
            mask = valid & np.isfinite(target)
            if mask.any():
                attr_report[name] = {
                    "n": int(mask.sum()),
                    "srcc": M.srcc(preds.attributes[mask, k], target[mask]),
                    "mae": float(np.mean(np.abs(preds.attributes[mask, k] - target[mask]))),
                }
        if attr_report:
            report["attributes"] = attr_report
    return report


def select_value(report: dict, metric: str) -> float | None:
    """Value at a dotted path such as "mos.all.srcc" (None when absent or NaN)."""
    value = report
    for part in metric.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    if not isinstance(value, (int, float)) or not np.isfinite(value):
        return None
    return float(value)


def evaluate_model(model_path: Path, records: Sequence[Record], device: str = "cpu",
                   batch_size: int = 16, num_workers: int = 0) -> dict:
    """Metrics report of an .onnx model or a training checkpoint on `records`."""
    model_path = Path(model_path)
    if model_path.suffix.lower() in (".onnx", ".json"):
        card = load_card(model_path)
        preds = predict_onnx(card.onnx_path, records, device, batch_size)
        attribute_names = list(card.attributes)
        described = {"path": str(card.onnx_path), "name": card.name, "version": card.version}
    else:
        preds, state = predict_checkpoint(model_path, records, device, batch_size, num_workers)
        attribute_names = list(state["attributes"])
        described = {"path": str(model_path), "checkpoint_epoch": state.get("epoch")}
    report = metrics_report(records, preds, attribute_names)
    report["model"] = described
    return report
