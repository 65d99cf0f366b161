"""The training loop: config section `train` -> checkpoints, a JSONL log and a best model.

CPU or CUDA (bf16/fp16 autocast on CUDA), AdamW with linear warmup and cosine decay
(training/schedule.py), an exponential moving average (EMA) of the weights that is what gets
validated, selected and exported (training/ema.py), a checkpoint after every epoch (`last.pt`:
model, EMA, optimizer, scheduler, epoch, RNG states) so `resume=True` continues where a run
stopped, and `best.pt` (the weights to export) whenever the configured validation metric
improves (training/checkpoint.py). Batches come from decoded images or from the feature cache
of a frozen prefix (training/features.py); the options and their defaults are in
training/config.py.

Randomness: every view, crop and sample order derives from (seed, epoch, index), and the
torch/numpy/python RNG states are checkpointed, so a resumed run sees what an uninterrupted one
would have.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from iqs_cli.card import plain_json
from iqs_cli.fsutil import write_atomic
from .checkpoint import (
    checkpoint_info,
    data_summary,
    resolve_device,
    restore_run_state,
    save_checkpoint,
    save_run_state,
)
from .config import TrainError, input_spec, merge_config, settle_attributes
from .data import SYNTHETIC_DATASET, check_fixed_size
from .datasets.base import Record
from .ema import ModelEMA
from .evaluate import metrics_report, predict_model, select_value
from .features import CachedBatches, live_bars, make_batches, training_datasets
from .headfit import fit_heads
from .losses import LossConfig, MultiTaskLoss
from .model import IQSNet
from .schedule import optimizer_and_schedule, seed_everything


@dataclass
class TrainResult:
    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    history: list[dict]
    split_sizes: dict[str, int] = field(default_factory=dict)  # labelled photos per split


def model_from_config(cfg: dict) -> IQSNet:
    options = dict(cfg["model"])
    pretrained = bool(options.pop("pretrained"))
    return IQSNet(num_attributes=len(cfg["attributes"]), pretrained=pretrained, **options)


def _forward(model: IQSNet, batch: dict, device: torch.device) -> dict:
    if "fmap" in batch:
        return model.forward_suffix(batch["fmap"], batch["pooled"])
    return model(batch["image"].to(device, non_blocking=True))


def _autocast(device: torch.device, enabled: bool):
    if device.type == "cuda" and enabled:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", enabled=False)


def train_model(cfg: dict, train_records: Sequence[Record], val_records: Sequence[Record],
                out_dir: Path, device: str = "cpu", resume: bool = False, epochs: int | None = None,
                data_root: Path | None = None, progress: bool = True,
                run_info: dict | None = None, stop_after: int | None = None) -> TrainResult:
    """Train on `train_records` (+ synthetic distortions), select on `val_records`.

    epochs overrides the config's (the schedule follows it); stop_after ends this call after
    that many epochs, leaving a checkpoint that `resume=True` continues exactly as if the run
    had not stopped (for time-limited sessions)."""
    cfg = merge_config(cfg)
    if epochs is not None:
        cfg["epochs"] = int(epochs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path, log_path = out_dir / "last.pt", out_dir / "best.pt", out_dir / "metrics.jsonl"
    if not resume and last_path.exists():
        raise TrainError(f"{out_dir} already holds a run (last.pt); pass --resume to continue it, "
                         "or choose another --out folder")
    if resume and not last_path.exists():
        raise TrainError(f"--resume: {last_path} not found; start without --resume")
    dev = resolve_device(device)
    seed = int(cfg["seed"])
    seed_everything(seed)
    spec = input_spec(cfg)
    check_fixed_size(spec)
    attributes = settle_attributes(cfg, train_records)
    dataset_names = sorted({r.dataset for r in [*train_records, *val_records]})
    if cfg["synthetic"]["enabled"]:
        dataset_names.append(SYNTHETIC_DATASET)

    model = model_from_config(cfg)
    known_mos = [r.mos for r in train_records if r.mos is not None]
    if known_mos:
        # Start the MOS head at the training mean: step 0 is the constant predictor.
        mean = min(max(float(np.mean(known_mos)) / 100.0, 0.02), 0.98)
        with torch.no_grad():
            model.mos_head.bias.fill_(math.log(mean / (1 - mean)))
    model = model.to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    criterion = MultiTaskLoss(LossConfig.from_dict(cfg["loss"])).to(dev)
    record_ds, synth_ds, val_ds = training_datasets(cfg, spec, attributes, dataset_names,
                                                    train_records, val_records, data_root)
    batches, val_store = make_batches(cfg, model, record_ds, synth_ds, val_ds, attributes,
                                      dataset_names, out_dir / "feature_cache", dev, progress)

    steps_per_epoch = batches.steps_per_epoch()
    optimizer, scheduler = optimizer_and_schedule(model, cfg, steps_per_epoch)
    ema = ModelEMA(model, cfg["ema_decay"]) if cfg["ema_decay"] else None
    use_scaler = dev.type == "cuda" and cfg["amp"] and not torch.cuda.is_bf16_supported()
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)

    select_metric = cfg["select"]["metric"] or (
        "mos.all.srcc" if any(r.mos is not None for r in val_records) else "class.all.macro_f1")
    mode = cfg["select"]["mode"]
    if mode not in ("max", "min"):
        raise TrainError(f"select.mode must be \"max\" or \"min\", got {mode!r}")
    best = {"metric": select_metric, "value": None, "epoch": None}
    start_epoch = 0
    history: list[dict] = []
    if resume:
        state = restore_run_state(last_path, cfg, model, ema, optimizer, scheduler, scaler)
        start_epoch = int(state["epoch"]) + 1
        best = state["best"]
        history = _read_log(log_path, upto_epoch=state["epoch"])
        _write_log(log_path, history)

    info = checkpoint_info(model, spec, attributes, cfg, dataset_names,
                           data_summary(train_records, val_records, synth_ds), run_info)

    end_epoch = cfg["epochs"] if stop_after is None else min(cfg["epochs"], start_epoch + stop_after)
    for epoch in range(start_epoch, end_epoch):
        model.train()
        started = time.perf_counter()
        sums: dict[str, float] = {}
        seen = 0
        bar = tqdm(batches.epoch(epoch, seed), total=steps_per_epoch, disable=not live_bars(progress),
                   desc=f"epoch {epoch + 1}/{cfg['epochs']}", leave=False)
        for batch in bar:
            with _autocast(dev, cfg["amp"]):
                outputs = _forward(model, batch, dev)
            loss, parts = criterion({k: v.float() for k, v in outputs.items()}, batch)
            if not torch.isfinite(loss):
                raise TrainError(f"loss became {float(loss)} at epoch {epoch + 1} (terms {parts}); "
                                 "lower lr / backbone_lr or check the labels")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg["grad_clip"]:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"])
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update(model)
            n = int(batch["mos"].shape[0])
            seen += n
            sums["loss"] = sums.get("loss", 0.0) + loss.item() * n
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v * n
            bar.set_postfix(loss=f"{sums['loss'] / seen:.4f}")
        train_seconds = time.perf_counter() - started
        evaluated = ema.module if ema is not None else model
        entry = {
            "epoch": epoch + 1,
            "train": {k: v / max(1, seen) for k, v in sums.items()},
            "lr": scheduler.get_last_lr(),
            "train_images_per_s": seen / train_seconds if train_seconds else None,
            "train_seconds": train_seconds,
        }
        value = None
        if val_ds is not None:
            preds = predict_model(evaluated, val_ds, dev, cfg["eval_batch_size"], cfg["num_workers"],
                                  store=val_store)
            entry["val"] = metrics_report(val_records, preds, attributes)
            value = select_value(entry["val"], select_metric)
        if val_ds is None:
            improved = True  # nothing to select on: the latest weights are the best we know
        elif value is None:
            # Undefined this epoch (e.g. constant output): keep a defined best, else the latest.
            improved = best["value"] is None
        else:
            improved = best["value"] is None or (
                value > best["value"] if mode == "max" else value < best["value"])
        if improved:
            best = {"metric": select_metric, "value": value, "epoch": epoch + 1}
        entry["best"] = dict(best)
        history.append(entry)
        _append_log(log_path, entry)
        weights = evaluated.state_dict()
        if improved:
            save_checkpoint({**info, "weights": weights, "epoch": epoch + 1,
                             "val": entry.get("val"), "best": best}, best_path)
        save_run_state(last_path, info, weights, model, ema, optimizer, scheduler,
                       scaler if use_scaler else None, epoch, best)
        if progress:
            shown = (f"{select_metric} {value:.4f}" if value is not None
                     else "no validation" if val_ds is None
                     else f"{select_metric} undefined (predictions or targets all equal)")
            print(f"epoch {epoch + 1}/{cfg['epochs']}: loss {entry['train'].get('loss', float('nan')):.4f}, "
                  f"{shown} (best {best['value'] if best['value'] is None else round(best['value'], 4)} "
                  f"at epoch {best['epoch']})", flush=True)
    if cfg["head_fit"]["enabled"]:
        history.append(_fit_heads(cfg, ema.module if ema is not None else model, best_path, batches, val_ds,
                                  val_records, val_store, attributes, dev, seed, log_path, progress))
    return TrainResult(out_dir, best_path, last_path, history)


def _fit_heads(cfg, net: IQSNet, best_path: Path, batches, val_ds, val_records, val_store,
               attributes, dev, seed: int, log_path: Path, progress: bool) -> dict:
    """Best checkpoint -> heads solved on the cached training features -> best.pt."""
    if not isinstance(batches, CachedBatches):
        raise TrainError("head_fit needs feature_cache.enabled (the heads are fit on cached features)")
    state = torch.load(best_path, map_location="cpu", weights_only=False)
    net.load_state_dict(state["weights"])
    options = {k: v for k, v in cfg["head_fit"].items() if v is not None and k != "enabled"}
    try:
        report = fit_heads(net, batches.record_store, batches.views, batches.synth_store,
                           batches.group_size, options, seed)
    except ValueError as exc:
        raise TrainError(str(exc)) from exc
    entry = {"epoch": state["epoch"], "head_fit": report}
    if val_ds is not None:
        preds = predict_model(net, val_ds, dev, cfg["eval_batch_size"], cfg["num_workers"], store=val_store)
        entry["val"] = metrics_report(val_records, preds, attributes)
    _append_log(log_path, entry)
    save_checkpoint({**state, "weights": net.state_dict(), "val": entry.get("val"), "head_fit": report},
                    best_path)
    if progress:
        mos = entry.get("val", {}).get("mos", {}).get("all", {}).get("srcc")
        lambdas = {head: fit["lambda"] for head, fit in report.items()}
        print(f"heads fit on cached features (penalties {lambdas}): val MOS SRCC {mos}", flush=True)
    return entry


def _read_log(path: Path, upto_epoch: int) -> list[dict]:
    """Log entries of finished epochs (a crash can leave one line past the checkpoint)."""
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            entry = json.loads(line)
            if entry["epoch"] <= upto_epoch + 1:
                entries.append(entry)
    return entries


def _write_log(path: Path, entries: list[dict]) -> None:
    write_atomic(path, "".join(json.dumps(plain_json(e)) + "\n" for e in entries))


def _append_log(path: Path, entry: dict) -> None:
    with open(path, "a", encoding="utf-8") as log:
        log.write(json.dumps(plain_json(entry)) + "\n")
