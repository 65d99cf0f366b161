"""The training loop: config section `train` -> checkpoints, a JSONL log and a best model.

CPU or CUDA (bf16/fp16 autocast on CUDA), AdamW with linear warmup and cosine decay, an
exponential moving average (EMA) of the weights that is what gets validated, selected and
exported, a checkpoint after every epoch (`last.pt`: model, EMA, optimizer, scheduler, epoch,
RNG states) so `resume=True` continues where a run stopped, and `best.pt` (the weights to
export) whenever the configured validation metric improves.

Feature cache. With a frozen prefix (model.trainable_blocks = N: only the last N blocks, the
conv head and the heads train) the prefix's output for each training image never changes, so
`feature_cache.enabled` computes it once per (image, view) - view 0 the photo, view 1 its
mirror image - and every epoch runs only the trainable suffix on the cached tensors. On two CPU
cores that turns an epoch over a few hundred photos from minutes into seconds. Synthetic
distortions are cached as a fixed set drawn once (`synthetic.cached_groups`). The cache lives
in <run>/feature_cache/<key>/ (float16 memory-mapped .npy files) and is reused on resume.

Randomness: every view, crop and sample order derives from (seed, epoch, index), and the
torch/numpy/python RNG states are checkpointed, so a resumed run sees what an uninterrupted one
would have.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from iqs_cli.card import InputSpec
from .data import (
    SYNTHETIC_DATASET,
    RecordDataset,
    SyntheticDataset,
    check_fixed_size,
    collate_groups,
    concat_batches,
)
from .datasets.base import DataWarning, Record
from .evaluate import metrics_report, plain_json, predict_model, select_value
from .losses import LossConfig, MultiTaskLoss
from .model import IQSNet, build_model

CHECKPOINT_FORMAT = "iqs-train-checkpoint/1"
DEFAULT_ATTRIBUTES = ("blur", "noise", "underexposure", "overexposure", "compression", "color")

# The `train` section of a config with every default; a config states only what differs.
DEFAULTS: dict = {
    "seed": 0,
    "model": {
        "backbone": "lite0",
        "pretrained": True,
        "dropout": 0.2,
        "multiscale": False,
        "trainable_blocks": None,  # None: everything trains; N: only the last N blocks
        "train_conv_head": True,
        "head_hidden": 0,
        "drop_connect": 0.0,
        "feature_norm": True,
        "mos_span": [0.0, 100.0],  # MOS = low + (high - low) * sigmoid(logit), clipped to 0-100
    },
    "attributes": None,  # None: the attributes the data has (records and synthetic)
    "input": {"size": 320, "resize": "squash", "crop": "none"},
    "epochs": 15,
    "batch_size": 24,
    "lr": 1e-3,  # heads
    "backbone_lr": 2e-4,  # trainable backbone part
    "weight_decay": 0.01,
    "warmup_epochs": 1.0,
    "min_lr_ratio": 0.01,
    "grad_clip": 5.0,
    "ema_decay": 0.998,  # 0 or null: no EMA
    "amp": True,  # CUDA only
    "num_workers": 2,
    "eval_batch_size": 32,
    "augment": {"hflip": True, "crop_area": [1.0, 1.0]},
    "feature_cache": {"enabled": False, "views": 2},
    "loss": {},
    "synthetic": {
        "enabled": False,
        "references": [],  # globs relative to the data root
        "reference_mos": 85.0,
        "references_from_records": None,  # {"min_mos": 75}: top-rated train photos too
        "groups_per_epoch": None,  # default: one group per training step x batch_groups
        "batch_groups": 4,  # synthetic groups added to every step
        "ladder_levels": 0,  # >0: ladders of one distortion at n levels (ranking loss)
        "include_reference": True,
        "use_mos": True,  # False: pseudo-MOS does not train the MOS head (ranking still does)
        "cached_groups": 400,  # with feature_cache: fixed groups drawn once
        "style_groups": 0,  # more groups of photographer's styles + a defective twin (data.py)
        "options": {},  # passed to SyntheticDistortions (mix_probability, kinds, ...)
    },
    "select": {"metric": None, "mode": "max"},  # None: mos.all.srcc, else class.all.macro_f1
    # After the epochs, solve the linear heads of a fully frozen backbone exactly (ridge /
    # L2 logistic, penalty by grouped k-fold CV on the training features): training.headfit.
    "head_fit": {"enabled": False, "folds": 5, "mos_lambdas": None, "class_lambdas": None,
                 "attribute_lambdas": None, "class_levels": None, "max_false_reject": None},
    "thresholds": {},  # card thresholds at export (stars, reason, reject_at, accept_at)
}


class TrainError(Exception):
    """A training run cannot start or go on (message says what to do)."""


def merge_config(section: dict | None, defaults: dict = DEFAULTS, where: str = "train") -> dict:
    """Defaults overlaid with `section`, refusing unknown keys (a typo must not be ignored)."""
    section = {k: v for k, v in (section or {}).items() if k != "notes"}  # notes: for people
    unknown = set(section) - set(defaults)
    if unknown:
        raise TrainError(f"unknown option(s) {sorted(unknown)} in config section {where!r}; "
                         f"known: {sorted(defaults)}")
    merged = {}
    for key, default in defaults.items():
        value = section.get(key, default)
        # "loss", "options" and "thresholds" are free-form (checked by their users).
        if isinstance(default, dict) and default and isinstance(value, dict) and key not in (
            "options", "thresholds"
        ):
            value = merge_config(value, default, f"{where}.{key}")
        merged[key] = copy.deepcopy(value)
    return merged


def default_attributes(records: Sequence[Record], synthetic: bool) -> list[str]:
    """Attribute targets the training data has: DEFAULT_ATTRIBUTES order first, then others."""
    present = {name for r in records for name in r.attributes}
    if synthetic:
        from .datasets.synthetic import ATTRIBUTES

        present |= set(ATTRIBUTES)
    return [a for a in DEFAULT_ATTRIBUTES if a in present] + sorted(present - set(DEFAULT_ATTRIBUTES))


def labelled_attributes(attributes: Sequence[str], records: Sequence[Record],
                        synthetic: bool) -> tuple[list[str], list[str]]:
    """(attributes some training target labels, attributes nothing labels). Synthetic
    distortions label every attribute of training.datasets.synthetic."""
    labelled = {name for r in records for name, value in r.attributes.items()
                if value is not None and math.isfinite(value)}
    if synthetic:
        from .datasets.synthetic import ATTRIBUTES

        labelled |= set(ATTRIBUTES)
    return ([a for a in attributes if a in labelled], [a for a in attributes if a not in labelled])


def live_bars(progress: bool) -> bool:
    """tqdm bars only on a terminal: in a log file each redraw is another `\\r` line, and the
    one line per epoch says what matters there."""
    try:
        return progress and sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def input_spec(cfg: dict) -> InputSpec:
    spec = cfg["input"]
    return InputSpec(size=int(spec["size"]), resize=spec.get("resize", "squash"),
                     crop=spec.get("crop", "none"))


def model_from_config(cfg: dict) -> IQSNet:
    options = dict(cfg["model"])
    pretrained = bool(options.pop("pretrained"))
    return IQSNet(num_attributes=len(cfg["attributes"]), pretrained=pretrained, **options)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError("--device cuda: this torch has no CUDA device; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise TrainError(f"unknown device {device!r}; use cpu, cuda or auto")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_states() -> dict:
    states = {"python": random.getstate(), "numpy": np.random.get_state(),
              "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class ModelEMA:
    """Exponential moving average of the trainable weights (and the BatchNorm statistics of
    the trainable modules; frozen parts never change, so they are not touched).

    The decay ramps up as (1 + n) / (10 + n) so short runs are not dominated by the
    initial (untrained) heads."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.updates = 0
        self.param_names = [n for n, p in model.named_parameters() if p.requires_grad]
        ema_params = dict(self.module.named_parameters())
        self.ema_params = [ema_params[n] for n in self.param_names]
        self.buffer_names = [
            f"{module_name}.{buffer_name}" if module_name else buffer_name
            for module_name, module in model.named_modules()
            if any(p.requires_grad for p in module.parameters(recurse=False))
            for buffer_name, _ in module.named_buffers(recurse=False)
        ]
        ema_buffers = dict(self.module.named_buffers())
        self.ema_buffers = [ema_buffers[n] for n in self.buffer_names]

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        params = dict(model.named_parameters())
        torch._foreach_lerp_(self.ema_params, [params[n].detach() for n in self.param_names], 1.0 - d)
        buffers = dict(model.named_buffers())
        for name, value in zip(self.buffer_names, self.ema_buffers):
            value.copy_(buffers[name])


def param_groups(model: IQSNet, lr: float, backbone_lr: float, weight_decay: float) -> list[dict]:
    """Backbone and heads at their own rates; no weight decay on biases and norm weights."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        key = (name.startswith("backbone."), p.ndim <= 1)
        groups.setdefault(key, []).append(p)
    return [
        {"params": params, "lr": backbone_lr if is_backbone else lr,
         "weight_decay": 0.0 if no_decay else weight_decay}
        for (is_backbone, no_decay), params in sorted(groups.items())
    ]


def warmup_cosine(total_steps: int, warmup_steps: int, min_ratio: float):
    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        progress = min(1.0, max(0.0, progress))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _order(n: int, weights: np.ndarray | None, seed: int, epoch: int) -> np.ndarray:
    """Sample order of an epoch: a permutation, or weighted draws when weights differ."""
    rng = np.random.default_rng((seed, epoch, 7))
    if weights is None:
        return rng.permutation(n)
    return rng.choice(n, size=n, replace=True, p=weights / weights.sum())


def _chunks(order: np.ndarray, size: int, drop_last: bool) -> list[list[int]]:
    chunks = [order[i:i + size].tolist() for i in range(0, len(order), size)]
    if len(chunks) > 1 and len(chunks[-1]) < size:
        if drop_last:
            chunks.pop()  # a small last batch gives BatchNorm and PLCC few samples
        elif len(chunks[-1]) < 2:
            chunks[-2] += chunks.pop()  # BatchNorm cannot train on a batch of one
    return chunks


def _record_weights(records: Sequence[Record]) -> np.ndarray | None:
    weights = np.array([r.weight for r in records], dtype=np.float64)
    if len(weights) == 0 or np.allclose(weights, weights[0]):
        return None
    if (weights < 0).any() or weights.sum() <= 0:
        raise TrainError("record sampling weights must be >= 0 with a positive sum")
    return weights


# -- sources of batches ------------------------------------------------------------------------


class _ViewDataset(Dataset):
    """Deterministic view (0 plain, 1 mirrored) of each record, for the feature cache."""

    def __init__(self, records: RecordDataset, view: int):
        self.records, self.view = records, view

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        item = self.records.targets(index)
        item["image"] = torch.from_numpy(self.records.image(index, view=self.view))
        return item


@dataclass
class FeatureStore:
    """Cached prefix outputs and targets of M items (fmap [M, C, h, w] f16, pooled [M, D])."""

    fmap: np.ndarray | None
    pooled: np.ndarray | None
    targets: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return len(self.targets["mos"])

    def batch(self, indices: Sequence[int], device: torch.device) -> dict:
        # Sorted reads are faster on a memory map; the order inside a batch does not matter.
        idx = np.sort(np.asarray(indices, dtype=np.int64))
        batch = {k: v[torch.from_numpy(idx)] for k, v in self.targets.items()}
        batch["fmap"] = None if self.fmap is None else torch.from_numpy(
            np.ascontiguousarray(self.fmap[idx])).to(device).float()
        batch["pooled"] = None if self.pooled is None else torch.from_numpy(
            np.ascontiguousarray(self.pooled[idx])).to(device).float()
        return batch


def build_feature_store(model: IQSNet, dataset: Dataset, folder: Path, key: dict,
                        device: torch.device, batch_size: int, num_workers: int,
                        items_per_entry: int = 1, collate=None, progress: bool = True,
                        desc: str = "caching") -> FeatureStore:
    """Run the frozen prefix over `dataset` once (or reuse a finished cache with the same key).

    A dataset entry gives `items_per_entry` images (synthetic groups, with collate_groups)."""
    from tqdm import tqdm

    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    final = folder / digest
    if not (final / "done.json").exists():
        tmp = folder / f"{digest}.partial"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        total = len(dataset) * items_per_entry
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                            collate_fn=collate)
        fmap_file = pooled_file = None
        targets: dict[str, list] = {}
        offset = 0
        was_training = model.training
        model.eval()
        if progress and not live_bars(progress):
            print(f"{desc}: {total} images", flush=True)
        with torch.no_grad():
            for batch in tqdm(loader, desc=desc, disable=not live_bars(progress), leave=False):
                images = batch.pop("image").to(device)
                fmap, pooled = model.encode_prefix(images)
                n = images.shape[0]
                if offset == 0:
                    if fmap is not None:
                        fmap_file = np.lib.format.open_memmap(
                            tmp / "fmap.npy", mode="w+", dtype=np.float16, shape=(total, *fmap.shape[1:]))
                    if pooled is not None:
                        pooled_file = np.lib.format.open_memmap(
                            tmp / "pooled.npy", mode="w+", dtype=np.float32, shape=(total, pooled.shape[1]))
                if fmap_file is not None:
                    fmap_file[offset:offset + n] = fmap.half().cpu().numpy()
                if pooled_file is not None:
                    pooled_file[offset:offset + n] = pooled.float().cpu().numpy()
                for k, v in batch.items():
                    targets.setdefault(k, []).append(v)
                offset += n
        model.train(was_training)
        if offset != total:
            raise TrainError(f"feature cache: expected {total} items, got {offset}")
        del fmap_file, pooled_file  # flushes the memory maps
        torch.save({k: torch.cat(v) for k, v in targets.items()}, tmp / "targets.pt")
        (tmp / "done.json").write_text(json.dumps({"key": key, "items": offset}, default=str))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    fmap = np.load(final / "fmap.npy", mmap_mode="r") if (final / "fmap.npy").exists() else None
    pooled = np.load(final / "pooled.npy", mmap_mode="r") if (final / "pooled.npy").exists() else None
    targets = torch.load(final / "targets.pt", weights_only=True)
    # Caches written before the "source" target existed: no source photo known.
    targets.setdefault("source", torch.full_like(targets["level"], -1))
    return FeatureStore(fmap, pooled, targets)


class ImageBatches:
    """Batches of decoded images: records (with augmentation) plus synthetic groups."""

    def __init__(self, records: RecordDataset | None, synthetic: SyntheticDataset | None,
                 cfg: dict, device: torch.device):
        self.records, self.synthetic, self.cfg, self.device = records, synthetic, cfg, device
        self.weights = _record_weights(records.records) if records is not None else None
        self.batch_size = cfg["batch_size"]
        self.batch_groups = cfg["synthetic"]["batch_groups"]
        self.workers = cfg["num_workers"]

    def steps_per_epoch(self) -> int:
        if self.records is not None and len(self.records):
            return len(_chunks(np.arange(len(self.records)), self.batch_size,
                               drop_last=len(self.records) >= 2 * self.batch_size))
        return max(1, len(self.synthetic) // self.batch_groups)

    def _loader(self, dataset, batches, collate=None):
        return DataLoader(dataset, batch_sampler=batches, num_workers=self.workers,
                          collate_fn=collate, persistent_workers=False)

    def epoch(self, epoch: int, seed: int) -> Iterator[dict]:
        steps = self.steps_per_epoch()
        record_iter = synth_iter = None
        if self.records is not None and len(self.records):
            self.records.set_epoch(epoch)
            order = _order(len(self.records), self.weights, seed, epoch)
            chunks = _chunks(order, self.batch_size, drop_last=len(self.records) >= 2 * self.batch_size)
            record_iter = iter(self._loader(self.records, chunks))
        if self.synthetic is not None:
            self.synthetic.set_epoch(epoch)
            groups = np.arange(len(self.synthetic))
            chunks = _chunks(np.resize(groups, steps * self.batch_groups), self.batch_groups, False)
            synth_iter = iter(self._loader(self.synthetic, chunks[:steps], collate_groups))
        for _ in range(steps):
            parts = [next(record_iter) if record_iter else None, next(synth_iter) if synth_iter else None]
            yield concat_batches(parts)


class CachedBatches:
    """Batches of cached prefix features: each record in a random cached view per epoch."""

    def __init__(self, records: RecordDataset | None, record_store: FeatureStore | None,
                 views: int, synth_store: FeatureStore | None, group_size: int, cfg: dict,
                 device: torch.device):
        self.records, self.record_store, self.views = records, record_store, views
        self.synth_store, self.group_size = synth_store, group_size
        self.weights = _record_weights(records.records) if records is not None else None
        self.batch_size = cfg["batch_size"]
        self.batch_groups = cfg["synthetic"]["batch_groups"]
        self.device = device

    def steps_per_epoch(self) -> int:
        if self.records is not None and len(self.records):
            n = len(self.records)
            return len(_chunks(np.arange(n), self.batch_size, drop_last=n >= 2 * self.batch_size))
        return max(1, len(self.synth_store) // self.group_size // self.batch_groups)

    def epoch(self, epoch: int, seed: int) -> Iterator[dict]:
        rng = np.random.default_rng((seed, epoch, 11))
        steps = self.steps_per_epoch()
        record_chunks = []
        n = len(self.records) if self.records is not None else 0
        if n:
            order = _order(n, self.weights, seed, epoch)
            record_chunks = _chunks(order, self.batch_size, drop_last=n >= 2 * self.batch_size)
        for step in range(steps):
            parts = []
            if record_chunks:
                chunk = np.asarray(record_chunks[step])
                view = rng.integers(0, self.views, size=len(chunk))
                parts.append(self.record_store.batch(view * n + chunk, self.device))
            if self.synth_store is not None:
                n_groups = len(self.synth_store) // self.group_size
                groups = rng.choice(n_groups, size=min(self.batch_groups, n_groups), replace=False)
                items = (groups[:, None] * self.group_size + np.arange(self.group_size)).reshape(-1)
                parts.append(self.synth_store.batch(items, self.device))
            yield _concat_cached(parts)


def _concat_cached(parts: list[dict]) -> dict:
    if len(parts) == 1:
        return parts[0]
    out = {}
    for key in parts[0]:
        values = [p[key] for p in parts]
        out[key] = None if values[0] is None else torch.cat(values)
    return out


# -- the loop -----------------------------------------------------------------------------------


@dataclass
class TrainResult:
    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    history: list[dict]
    split_sizes: dict[str, int] = field(default_factory=dict)  # labelled photos per split


def _forward(model: IQSNet, batch: dict, device: torch.device) -> dict:
    if "fmap" in batch:
        return model.forward_suffix(batch["fmap"], batch["pooled"])
    return model(batch["image"].to(device, non_blocking=True))


def _autocast(device: torch.device, enabled: bool):
    if device.type == "cuda" and enabled:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", enabled=False)


def synthetic_references(cfg: dict, data_root: Path | None, train_records: Sequence[Record]):
    """(paths, reference MOS) of the synthetic references: config globs + top-rated photos."""
    syn = cfg["synthetic"]
    paths: list[Path] = []
    mos: list[float] = []
    root = Path(data_root) if data_root is not None else Path.cwd()
    for pattern in syn["references"]:
        found = sorted(root.glob(pattern)) if not Path(pattern).is_absolute() else sorted(
            Path("/").glob(pattern.lstrip("/")))
        if not found:
            raise TrainError(f"synthetic reference pattern {pattern!r} matches no file under {root}")
        paths += found
        mos += [float(syn["reference_mos"])] * len(found)
    from_records = syn["references_from_records"]
    if from_records:
        threshold = float(from_records.get("min_mos", 75))
        for r in train_records:
            if r.mos is not None and r.mos >= threshold:
                paths.append(Path(r.path))
                mos.append(float(r.mos))
    if not paths and from_records:
        raise TrainError(f"synthetic.references_from_records: no training photo has a MOS of at "
                         f"least {threshold:g} (min_mos) and synthetic.references names no file; "
                         "lower min_mos, add references, or set synthetic.enabled to false")
    if not paths:
        raise TrainError("synthetic.enabled needs synthetic.references (globs under the data root) "
                         "or synthetic.references_from_records")
    return paths, mos


def train_model(cfg: dict, train_records: Sequence[Record], val_records: Sequence[Record],
                out_dir: Path, device: str = "cpu", resume: bool = False, epochs: int | None = None,
                data_root: Path | None = None, progress: bool = True,
                run_info: dict | None = None, stop_after: int | None = None) -> TrainResult:
    """Train on `train_records` (+ synthetic distortions), select on `val_records`.

    epochs overrides the config's (the schedule follows it); stop_after ends this call after
    that many epochs, leaving a checkpoint that `resume=True` continues exactly as if the run
    had not stopped (for time-limited sessions)."""
    from tqdm import tqdm

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
    if cfg["attributes"] is None:
        cfg["attributes"] = default_attributes(train_records, cfg["synthetic"]["enabled"])
    if not train_records and not cfg["synthetic"]["enabled"]:
        raise TrainError("no training data: the config gives no training records and synthetic "
                         "distortions are off")
    attributes, unlabelled = labelled_attributes(cfg["attributes"], train_records,
                                                 cfg["synthetic"]["enabled"])
    if unlabelled:
        # A head that never saw a label would still give severities, and the card would offer
        # them as reasons: leave it out of the model (and so of the export and its card).
        warnings.warn(DataWarning(
            f"no training photo has a label for the attribute(s) {', '.join(unlabelled)}"
            f"{'' if cfg['synthetic']['enabled'] else ' and synthetic distortions are off'}: "
            "left out of the model, so it will not give them as reasons; label them in the "
            "data or enable \"synthetic\" in the config"), stacklevel=2)
        cfg["attributes"] = attributes
    if train_records and not cfg["synthetic"]["enabled"]:
        # The class and MOS heads are part of the model contract: they cannot be left out.
        if all(r.label is None for r in train_records):
            warnings.warn(DataWarning(
                "no training photo has a class (rejected/pending/accepted): the pick labels of "
                "this model mean nothing; give the data classes (a class column in a CSV, or "
                "class_rules in the config)"),
                stacklevel=2)
        if all(r.mos is None for r in train_records):
            warnings.warn(DataWarning(
                "no training photo has a MOS: the MOS and stars of this model mean nothing; give "
                "the data scores (a mos column in a CSV)"), stacklevel=2)
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
    record_ds = RecordDataset(train_records, spec, train=True, augment=cfg["augment"],
                              attributes=attributes, dataset_names=dataset_names, seed=seed) \
        if train_records else None
    synth_ds = None
    if cfg["synthetic"]["enabled"]:
        from .datasets.synthetic import SyntheticDistortions

        syn = cfg["synthetic"]
        paths, ref_mos = synthetic_references(cfg, data_root, train_records)
        steps_guess = max(1, math.ceil(len(train_records) / cfg["batch_size"])) if train_records else 50
        groups = syn["groups_per_epoch"] or steps_guess * syn["batch_groups"]
        if cfg["feature_cache"]["enabled"]:
            groups = syn["cached_groups"]
        options = dict(syn["options"])
        options.setdefault("crop_size", spec.size)
        options.setdefault("reference_short_side", max(spec.size, round(spec.size * 4 / 3)))
        synthetic = SyntheticDistortions(paths, samples_per_epoch=groups, seed=seed,
                                         reference_mos=ref_mos, **options)
        synth_ds = SyntheticDataset(synthetic, spec, attributes, dataset_names,
                                    ladder_levels=syn["ladder_levels"],
                                    include_reference=syn["include_reference"],
                                    use_mos=syn["use_mos"], style_groups=syn["style_groups"])

    val_ds = RecordDataset(val_records, spec, train=False, attributes=attributes,
                           dataset_names=dataset_names) if val_records else None
    val_store = None
    cache_cfg = cfg["feature_cache"]
    if cache_cfg["enabled"]:
        if model.trainable_blocks is None:
            raise TrainError("feature_cache needs a frozen prefix: set model.trainable_blocks "
                             "(e.g. 5: only the last 5 blocks, the conv head and the heads train)")
        views = int(cache_cfg["views"])
        if views not in (1, 2):
            raise TrainError("feature_cache.views must be 1 (photo) or 2 (photo and mirror image)")
        # The MOS span only maps the head's output: it does not change cached features.
        prefix_model = {k: v for k, v in cfg["model"].items() if k != "mos_span"}
        key_base = {"model": prefix_model, "seed": seed if not cfg["model"]["pretrained"] else None,
                    "input": cfg["input"], "attributes": attributes, "datasets": dataset_names}
        cache_dir = out_dir / "feature_cache"
        bs, nw = cfg["eval_batch_size"], cfg["num_workers"]
        record_store = None
        if record_ds is not None:
            from torch.utils.data import ConcatDataset

            views_ds = ConcatDataset([_ViewDataset(record_ds, v) for v in range(views)])
            record_store = build_feature_store(
                model, views_ds, cache_dir,
                {**key_base, "what": "train", "views": views,
                 "records": [(str(r.path), r.mos, r.label, sorted(r.attributes.items())) for r in train_records]},
                dev, bs, nw, progress=progress, desc="caching train features")
        synth_store = None
        if synth_ds is not None:
            synth_store = build_feature_store(
                model, synth_ds, cache_dir,
                {**key_base, "what": "synthetic", "synthetic": cfg["synthetic"], "synthetic_seed": seed,
                 "references": [str(p) for p in synth_ds.synthetic.references]},
                dev, max(1, bs // synth_ds.group_size), nw, items_per_entry=synth_ds.group_size,
                collate=collate_groups, progress=progress,
                desc="caching synthetic features")
        if val_ds is not None:
            val_store = build_feature_store(
                model, val_ds, cache_dir,
                {**key_base, "what": "val", "records": [str(r.path) for r in val_records]},
                dev, bs, nw, progress=progress, desc="caching val features")
        batches = CachedBatches(record_ds, record_store, views, synth_store,
                                synth_ds.group_size if synth_ds else 1, cfg, dev)
    else:
        batches = ImageBatches(record_ds, synth_ds, cfg, dev)

    steps_per_epoch = batches.steps_per_epoch()
    total_steps = steps_per_epoch * cfg["epochs"]
    optimizer = torch.optim.AdamW(param_groups(model, cfg["lr"], cfg["backbone_lr"], cfg["weight_decay"]))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(total_steps, round(cfg["warmup_epochs"] * steps_per_epoch), cfg["min_lr_ratio"]))
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
    config_digest = _config_digest(cfg)
    if resume:
        state = torch.load(last_path, map_location="cpu", weights_only=False)
        if state.get("config_digest") != config_digest:
            raise TrainError(f"{last_path} was trained with a different `train` config (only "
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
        start_epoch = int(state["epoch"]) + 1
        best = state["best"]
        history = _read_log(log_path, upto_epoch=state["epoch"])
        _write_log(log_path, history)

    info = checkpoint_info(model, spec, attributes, cfg, dataset_names,
                           _data_summary(train_records, val_records, synth_ds), run_info)

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
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(json.dumps(plain_json(entry)) + "\n")
        weights = evaluated.state_dict()
        if improved:
            _atomic_save({**info, "weights": weights, "epoch": epoch + 1,
                          "val": entry.get("val"), "best": best}, best_path)
        _atomic_save({
            **info, "weights": weights, "model": model.state_dict(),
            "ema_updates": ema.updates if ema is not None else 0,
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if use_scaler else None,
            "epoch": epoch, "best": best, "rng": rng_states(),
        }, last_path)
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
    from .headfit import fit_heads

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
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(json.dumps(plain_json(entry)) + "\n")
    _atomic_save({**state, "weights": net.state_dict(), "val": entry.get("val"), "head_fit": report},
                 best_path)
    if progress:
        mos = entry.get("val", {}).get("mos", {}).get("all", {}).get("srcc")
        lambdas = {head: fit["lambda"] for head, fit in report.items()}
        print(f"heads fit on cached features (penalties {lambdas}): val MOS SRCC {mos}", flush=True)
    return entry


def checkpoint_info(model: IQSNet, spec: InputSpec, attributes: Sequence[str], cfg: dict,
                    datasets: Sequence[str] = (), data_summary: dict | None = None,
                    run_info: dict | None = None) -> dict:
    """What every checkpoint holds besides weights: how to rebuild and feed the model."""
    return {
        "format": CHECKPOINT_FORMAT,
        "model_hparams": model.hparams(),
        "input": {"size": spec.size, "resize": spec.resize, "crop": spec.crop,
                  "mean": list(spec.mean), "std": list(spec.std)},
        "attributes": list(attributes),
        "train_config": cfg,
        "config_digest": _config_digest(cfg),
        "datasets": list(datasets),
        "data_summary": data_summary or {},
        **(run_info or {}),
    }


def save_weights_checkpoint(model: IQSNet, path: Path, spec: InputSpec, cfg: dict | None = None,
                            **extra) -> Path:
    """A checkpoint with only the export weights (what best.pt is; also for tests and tools)."""
    cfg = merge_config(cfg or {})
    attributes = cfg["attributes"] or list(DEFAULT_ATTRIBUTES)[:model.num_attributes]
    if len(attributes) != model.num_attributes:
        raise TrainError(f"{len(attributes)} attribute names for a model with {model.num_attributes}")
    state = {**checkpoint_info(model, spec, attributes, cfg), "weights": model.state_dict(), **extra}
    _atomic_save(state, Path(path))
    return Path(path)


def _config_digest(cfg: dict) -> str:
    without_epochs = {k: v for k, v in cfg.items() if k != "epochs"}
    return hashlib.sha256(json.dumps(without_epochs, sort_keys=True, default=str).encode()).hexdigest()


def _data_summary(train_records, val_records, synth_ds) -> dict:
    summary: dict = {}
    for split, records in (("train", train_records), ("val", val_records)):
        counts: dict[str, int] = {}
        for r in records:
            counts[r.dataset] = counts.get(r.dataset, 0) + 1
        summary[split] = counts
    if synth_ds is not None:
        summary["synthetic_references"] = len(synth_ds.synthetic.references)
    return summary


def _atomic_save(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


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
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(plain_json(e)) + "\n" for e in entries), encoding="utf-8")
    os.replace(tmp, path)


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
