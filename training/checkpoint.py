"""Training checkpoints: what they hold, written whole or not at all, and read back.

A checkpoint is a torch pickle of a dict: `format` (CHECKPOINT_FORMAT), how to rebuild and
feed the model (`model_hparams`, `input`, `attributes`), the `train_config` and its digest,
the data it saw, and `weights` (the EMA when the run keeps one: what gets exported). A run's
`last.pt` adds what resuming needs (the raw model, optimizer, scheduler, grad scaler, epoch,
best so far, RNG states); `best.pt` adds its epoch's validation report.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import torch

from iqs_cli.fsutil import write_atomic
from iqs_cli.vocabulary import InputSpec
from .config import DEFAULT_ATTRIBUTES, TrainError, config_digest, merge_config
from .model import IQSNet, build_model
from .schedule import restore_rng_states, rng_states

CHECKPOINT_FORMAT = "iqs-train-checkpoint/1"


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError("--device cuda: this torch has no CUDA device; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise TrainError(f"unknown device {device!r}; use cpu, cuda or auto")
    return torch.device(device)


def checkpoint_info(model: IQSNet, spec: InputSpec, attributes: Sequence[str], cfg: dict,
                    datasets: Sequence[str] = (), data_summary: dict | None = None,
                    run_info: dict | None = None) -> dict:
    """What every checkpoint holds besides weights: how to rebuild and feed the model."""
    return {
        "format": CHECKPOINT_FORMAT,
        "model_hparams": model.hparams(),
        "input": spec.to_dict(),
        "attributes": list(attributes),
        "train_config": cfg,
        "config_digest": config_digest(cfg),
        "datasets": list(datasets),
        "data_summary": data_summary or {},
        **(run_info or {}),
    }


def data_summary(train_records, val_records, synth_ds) -> dict:
    """Photos per dataset in each split (and the synthetic references), for the card."""
    summary: dict = {}
    for split, records in (("train", train_records), ("val", val_records)):
        counts: dict[str, int] = {}
        for r in records:
            counts[r.dataset] = counts.get(r.dataset, 0) + 1
        summary[split] = counts
    if synth_ds is not None:
        summary["synthetic_references"] = len(synth_ds.synthetic.references)
    return summary


def checkpoint_input(state: dict) -> InputSpec:
    """The model input a checkpoint was trained on."""
    return InputSpec.from_dict(state["input"])


def save_checkpoint(state: dict, path: Path) -> None:
    """`state` at `path`, whole or not at all (a crash keeps the previous checkpoint)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic(Path(path), buffer.getvalue())


def save_weights_checkpoint(model: IQSNet, path: Path, spec: InputSpec, cfg: dict | None = None,
                            **extra) -> Path:
    """A checkpoint with only the export weights (what best.pt is; also for tests and tools)."""
    cfg = merge_config(cfg or {})
    attributes = cfg["attributes"] or list(DEFAULT_ATTRIBUTES)[:model.num_attributes]
    if len(attributes) != model.num_attributes:
        raise TrainError(f"{len(attributes)} attribute names for a model with {model.num_attributes}")
    state = {**checkpoint_info(model, spec, attributes, cfg), "weights": model.state_dict(), **extra}
    save_checkpoint(state, Path(path))
    return Path(path)


def save_run_state(path: Path, info: dict, weights: dict, model, ema, optimizer, scheduler,
                   scaler, epoch: int, best: dict) -> None:
    """last.pt after epoch `epoch` (0-based): everything `restore_run_state` needs. `ema` and
    `scaler` are None when the run has none."""
    save_checkpoint({
        **info, "weights": weights, "model": model.state_dict(),
        "ema_updates": ema.updates if ema is not None else 0,
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": epoch, "best": best, "rng": rng_states(),
    }, path)


def restore_run_state(path: Path, cfg: dict, model, ema, optimizer, scheduler, scaler) -> dict:
    """Load last.pt into the run's objects (and the RNGs); returns the checkpoint, whose
    "epoch" is the last one finished (0-based) and "best" the best so far."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("config_digest") != config_digest(cfg):
        raise TrainError(f"{path} was trained with a different `train` config (only "
                         "epochs may change on --resume); start a new run in another folder")
    model.load_state_dict(state["model"])
    if ema is not None:
        ema.module.load_state_dict(state["weights"])
        ema.updates = int(state["ema_updates"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    restore_rng_states(state["rng"])
    return state


def load_checkpoint(path: Path, device: str | torch.device = "cpu") -> tuple[IQSNet, dict]:
    """Model with the checkpoint's export weights (the EMA when there is one) + its info."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise TrainError(f"{path}: checkpoint not found") from None
    except Exception as exc:  # torch raises many types for a damaged file
        raise TrainError(f"{path}: cannot read the checkpoint ({exc}); is it a `iqs train` "
                         "best.pt or last.pt?") from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise TrainError(f"{path}: not an iqs training checkpoint (best.pt / last.pt of `iqs train`)")
    model = build_model(state["model_hparams"])
    model.load_state_dict(state["weights"])
    return model.to(device).eval(), state
