"""Where a run's batches come from: decoded images, or the feature cache.

Feature cache. With a frozen prefix (model.trainable_blocks = N: only the last N blocks, the
conv head and the heads train) the prefix's output for each training image never changes, so
`feature_cache.enabled` computes it once per (image, view) - view 0 the photo, view 1 its
mirror image - and every epoch runs only the trainable suffix on the cached tensors. On two CPU
cores that turns an epoch over a few hundred photos from minutes into seconds. Synthetic
distortions are cached as a fixed set drawn once (`synthetic.cached_groups`). The cache lives
in <run>/feature_cache/<key>/ (float16 memory-mapped .npy files) and is reused on resume.

Every sample order, view and synthetic group derives from (seed, epoch, index).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset
from tqdm import tqdm

from iqs_cli.card import InputSpec
from .config import TrainError
from .data import RecordDataset, SyntheticDataset, collate_groups, concat_batches
from .datasets.base import Record
from .datasets.synthetic import SyntheticDistortions
from .model import IQSNet


def live_bars(progress: bool) -> bool:
    """tqdm bars only on a terminal: in a log file each redraw is another `\\r` line, and the
    one line per epoch says what matters there."""
    try:
        return progress and sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


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


def training_datasets(cfg: dict, spec: InputSpec, attributes: Sequence[str],
                      dataset_names: Sequence[str], train_records: Sequence[Record],
                      val_records: Sequence[Record], data_root: Path | None):
    """(training records, synthetic distortions, validation records) as torch Datasets; each
    None where the run has none."""
    seed = int(cfg["seed"])
    record_ds = RecordDataset(train_records, spec, train=True, augment=cfg["augment"],
                              attributes=attributes, dataset_names=dataset_names, seed=seed) \
        if train_records else None
    synth_ds = None
    if cfg["synthetic"]["enabled"]:
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
    return record_ds, synth_ds, val_ds


def make_batches(cfg: dict, model: IQSNet, record_ds: RecordDataset | None,
                 synth_ds: SyntheticDataset | None, val_ds: RecordDataset | None,
                 attributes: Sequence[str], dataset_names: Sequence[str], cache_dir: Path,
                 device: torch.device, progress: bool = True):
    """(the run's source of batches, the validation FeatureStore or None): with
    feature_cache.enabled the prefix's outputs are cached first (or found in `cache_dir`)."""
    cache_cfg = cfg["feature_cache"]
    if not cache_cfg["enabled"]:
        return ImageBatches(record_ds, synth_ds, cfg, device), None
    if model.trainable_blocks is None:
        raise TrainError("feature_cache needs a frozen prefix: set model.trainable_blocks "
                         "(e.g. 5: only the last 5 blocks, the conv head and the heads train)")
    views = int(cache_cfg["views"])
    if views not in (1, 2):
        raise TrainError("feature_cache.views must be 1 (photo) or 2 (photo and mirror image)")
    seed = int(cfg["seed"])
    # The MOS span only maps the head's output: it does not change cached features.
    prefix_model = {k: v for k, v in cfg["model"].items() if k != "mos_span"}
    key_base = {"model": prefix_model, "seed": seed if not cfg["model"]["pretrained"] else None,
                "input": cfg["input"], "attributes": attributes, "datasets": dataset_names}
    bs, nw = cfg["eval_batch_size"], cfg["num_workers"]
    record_store = synth_store = val_store = None
    if record_ds is not None:
        views_ds = ConcatDataset([_ViewDataset(record_ds, v) for v in range(views)])
        record_store = build_feature_store(
            model, views_ds, cache_dir,
            {**key_base, "what": "train", "views": views,
             "records": [(str(r.path), r.mos, r.label, sorted(r.attributes.items()))
                         for r in record_ds.records]},
            device, bs, nw, progress=progress, desc="caching train features")
    if synth_ds is not None:
        synth_store = build_feature_store(
            model, synth_ds, cache_dir,
            {**key_base, "what": "synthetic", "synthetic": cfg["synthetic"], "synthetic_seed": seed,
             "references": [str(p) for p in synth_ds.synthetic.references]},
            device, max(1, bs // synth_ds.group_size), nw, items_per_entry=synth_ds.group_size,
            collate=collate_groups, progress=progress,
            desc="caching synthetic features")
    if val_ds is not None:
        val_store = build_feature_store(
            model, val_ds, cache_dir,
            {**key_base, "what": "val", "records": [str(r.path) for r in val_ds.records]},
            device, bs, nw, progress=progress, desc="caching val features")
    batches = CachedBatches(record_ds, record_store, views, synth_store,
                            synth_ds.group_size if synth_ds else 1, cfg, device)
    return batches, val_store
