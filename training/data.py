"""torch Datasets: labelled records and synthetic distortions -> tensors and masked targets.

Pixels come from the command's own decoder (`iqs_cli.decode.load_rgb`) and its own
`iqs_cli.card.image_to_tensor`, so with train=False a file gives exactly the tensor `iqs score`
gives it (tests/test_export.py checks this).

Augmentations (train=True) leave quality alone: a horizontal flip, and an optional crop of
`crop_area` = [low, high] of the photo's area with the photo's aspect ratio, taken before the
card's resize. Such a crop enlarges the content by 1/sqrt(area) at most (1.12x at 0.8): objects
and defects keep nearly the scale they have in the run-time view (the whole photo resized),
which matters because blur and noise are judged at that scale. No blur, noise, colour or
brightness jitter: those change the quality the labels describe.

Every item is a dict: image float32 [3, H, W]; mos (NaN when unknown); label (-1 when unknown);
attributes float32 [K] (NaN when unknown); dataset (index into `dataset_names`); index (of
the record); reference / distortion / level (synthetic ladders; -1 elsewhere).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from iqs_cli.card import InputSpec, image_to_tensor
from iqs_cli.decode import DecodeError, load_rgb
from .datasets import synthetic as synth_module
from iqs_cli.vocabulary import CLASS_INDEX

from .datasets.base import DatasetError, Record
from .datasets.styles import style_group
from .fullref import full_reference_scores, quality_factor

SYNTHETIC_DATASET = "synthetic"


def check_fixed_size(spec: InputSpec) -> None:
    """Training stacks images into batches: every tensor must have one shape."""
    if spec.resize == "short_side" and spec.crop != "center":
        raise ValueError(
            "training needs one input shape: use input.resize \"squash\", or \"short_side\" "
            "with crop \"center\""
        )


def record_tensor(path: Path, spec: InputSpec) -> np.ndarray:
    """The run-time tensor of a file: decode as `iqs score` does, then the card's transform."""
    return image_to_tensor(load_rgb(Path(path), spec.decode_min_side), spec)


def _load_training_image(path: Path, min_side: int) -> Image.Image:
    try:
        return load_rgb(Path(path), min_side)
    except DecodeError as exc:
        raise DatasetError(f"{path}: {exc} (fix the file or drop it from the labels)") from None


def random_crop(image: Image.Image, area: float, rng: np.random.Generator) -> Image.Image:
    """A crop of `area` of the image (same aspect ratio) at a random position."""
    if area >= 1.0:
        return image
    scale = math.sqrt(area)
    w, h = image.size
    cw, ch = max(1, round(w * scale)), max(1, round(h * scale))
    left = int(rng.integers(0, w - cw + 1))
    top = int(rng.integers(0, h - ch + 1))
    return image.crop((left, top, left + cw, top + ch))


def attribute_vector(values: dict[str, float], names: Sequence[str]) -> np.ndarray:
    return np.array([values.get(name, np.nan) for name in names], dtype=np.float32).reshape(len(names))


class RecordDataset(Dataset):
    """Labelled photos (training.datasets Records) as tensors with masked targets.

    augment: {"hflip": bool (default True), "crop_area": [low, high] (default [1, 1])}; only
    used with train=True. Randomness is drawn from (seed, epoch, index): any worker and any
    resumed run see the same views. `view` forces a deterministic view for the feature cache:
    0 the plain photo, 1 its mirror image.
    """

    def __init__(self, records: Sequence[Record], spec: InputSpec, train: bool = False,
                 augment: dict | None = None, attributes: Sequence[str] = (),
                 dataset_names: Sequence[str] | None = None, seed: int = 0):
        self.records = list(records)
        self.spec = spec
        self.train = train
        augment = dict(augment or {})
        unknown = set(augment) - {"hflip", "crop_area"}
        if unknown:
            raise ValueError(f"unknown augment options {sorted(unknown)}; known: hflip, crop_area")
        self.hflip = bool(augment.get("hflip", True))
        low, high = augment.get("crop_area", (1.0, 1.0))
        if not 0.1 <= low <= high <= 1.0:
            raise ValueError(f"augment.crop_area must satisfy 0.1 <= low <= high <= 1, got {[low, high]}")
        self.crop_area = (float(low), float(high))
        self.attributes = list(attributes)
        self.dataset_names = list(dataset_names or sorted({r.dataset for r in self.records}))
        self.seed = seed
        self.epoch = 0
        if train:
            check_fixed_size(spec)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def targets(self, index: int) -> dict:
        record = self.records[index]
        return {
            "mos": torch.tensor(np.nan if record.mos is None else float(record.mos), dtype=torch.float32),
            "label": torch.tensor(-1 if record.label is None else int(record.label), dtype=torch.int64),
            "attributes": torch.from_numpy(attribute_vector(record.attributes, self.attributes)),
            "dataset": torch.tensor(self.dataset_names.index(record.dataset), dtype=torch.int64),
            "index": torch.tensor(index, dtype=torch.int64),
            "reference": torch.tensor(-1, dtype=torch.int64),
            "distortion": torch.tensor(-1, dtype=torch.int64),
            "level": torch.tensor(-1, dtype=torch.int64),
            "source": torch.tensor(-1, dtype=torch.int64),
        }

    def image(self, index: int, view: int | None = None) -> np.ndarray:
        path = self.records[index].path
        image = _load_training_image(path, self.spec.decode_min_side)
        if not self.train and view is None:
            return image_to_tensor(image, self.spec)  # exactly record_tensor()
        if view is None:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            image = random_crop(image, rng.uniform(*self.crop_area), rng)
            flip = self.hflip and rng.random() < 0.5
        else:
            flip = view == 1
        if flip:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        return image_to_tensor(image, self.spec)

    def __getitem__(self, index: int) -> dict:
        item = self.targets(index)
        item["image"] = torch.from_numpy(self.image(index))
        return item


class SyntheticDataset(Dataset):
    """Groups of synthetic distortions (training.datasets.synthetic) as tensors.

    ladder_levels = 0: each item is one sample of `SyntheticDistortions` (a random crop, a
    random distortion or mix), a group of 1 with no ranking ids.
    ladder_levels = n > 0: each item is a ladder for the ranking loss: one crop of one
    reference, one distortion kind at n distinct levels (plus the undistorted crop, level 0,
    when include_reference), all sharing a `reference` id so the milder can be ranked higher.
    Items are groups [G, ...]: `collate_groups` concatenates them into a batch.

    style_groups = m > 0: m more groups after those, each one crop of one reference with G - 2
    photographer's styles (training.datasets.styles: shallow focus, fog, low key, ...) labelled
    as the undistorted reference is (accepted), no defect in any attribute, at level 0, and one
    defective twin (soft everywhere, shaken, dark and noisy, ...) labelled rejected at level 5.
    The reference itself comes first (level 0), so a group ranks like a ladder.
    """

    def __init__(self, synthetic, spec: InputSpec, attributes: Sequence[str],
                 dataset_names: Sequence[str], ladder_levels: int = 0,
                 include_reference: bool = True, use_mos: bool = True, style_groups: int = 0):
        check_fixed_size(spec)
        self.synthetic = synthetic
        self.module = synth_module
        self.spec = spec
        self.attributes = list(attributes)
        self.dataset_index = list(dataset_names).index(SYNTHETIC_DATASET)
        if not 0 <= ladder_levels <= len(synth_module.LEVELS):
            raise ValueError(f"synthetic ladder_levels must be 0..{len(synth_module.LEVELS)}, got {ladder_levels}")
        self.ladder_levels = ladder_levels
        self.include_reference = include_reference
        # use_mos=False: the pseudo-MOS does not train the MOS head (labels, attributes and
        # the ranking loss still come from these samples), so human MOS alone sets its scale.
        self.use_mos = use_mos
        self.kind_names = list(synth_module.DISTORTIONS)
        self.style_groups = int(style_groups)
        if self.style_groups and self.group_size < 3:
            raise ValueError("style_groups need groups of at least 3 (reference, a style, a twin): "
                             "set ladder_levels >= 2 with include_reference")

    def __len__(self) -> int:
        return len(self.synthetic) + self.style_groups

    def set_epoch(self, epoch: int) -> None:
        self.synthetic.set_epoch(epoch)

    @property
    def group_size(self) -> int:
        if not self.ladder_levels:
            return 1
        return self.ladder_levels + (1 if self.include_reference else 0)

    def _item(self, image: np.ndarray, mos: float, label: int, attributes: dict, reference: int,
              distortion: int, level: int, source: int) -> dict:
        tensor = image_to_tensor(Image.fromarray(image), self.spec)
        return {
            "image": torch.from_numpy(tensor),
            "mos": torch.tensor(float(mos) if self.use_mos else float("nan"), dtype=torch.float32),
            "label": torch.tensor(int(label), dtype=torch.int64),
            "attributes": torch.from_numpy(attribute_vector(attributes, self.attributes)),
            "dataset": torch.tensor(self.dataset_index, dtype=torch.int64),
            "index": torch.tensor(-1, dtype=torch.int64),
            "reference": torch.tensor(reference, dtype=torch.int64),
            "distortion": torch.tensor(distortion, dtype=torch.int64),
            "level": torch.tensor(level, dtype=torch.int64),
            # which reference photo: head fitting keeps a photo's crops in one fold
            "source": torch.tensor(source, dtype=torch.int64),
        }

    def _ladder(self, index: int) -> list[dict]:
        synth, m = self.synthetic, self.module
        rng = np.random.default_rng((synth.seed, synth.epoch, index, 1))
        ref_index = int(rng.integers(len(synth.references)))
        crop = synth.reference_crop(ref_index, rng)
        reference_mos = synth.reference_mos[ref_index]
        kinds = synth.kinds or self.kind_names
        kind = kinds[int(rng.integers(len(kinds)))]
        levels = sorted(int(v) for v in rng.choice(m.LEVELS, size=self.ladder_levels, replace=False))
        # Unique per ladder within an epoch, which is all the ranking loss needs.
        group_id = index
        items = []
        if self.include_reference:
            label = synth.rules.label((), reference_mos, reference_mos)
            items.append(self._item(crop, reference_mos, label, m.attribute_targets(()), group_id,
                                    self.kind_names.index(kind), 0, ref_index))
        for level in levels:
            distortions = ((kind, level),)
            image = m.apply_distortions(crop, distortions, rng)
            quality = reference_mos * quality_factor(full_reference_scores(crop, image))
            label = synth.rules.label(distortions, quality, reference_mos)
            items.append(self._item(image, quality, label, m.attribute_targets(distortions), group_id,
                                    self.kind_names.index(kind), level, ref_index))
        return items

    def _styles(self, index: int) -> list[dict]:
        synth = self.synthetic
        rng = np.random.default_rng((synth.seed, synth.epoch, index, 2))
        ref_index = int(rng.integers(len(synth.references)))
        crop = synth.reference_crop(ref_index, rng)
        reference_mos = synth.reference_mos[ref_index]
        group = style_group(crop, self.group_size - 2, rng)
        kept = synth.rules.label((), reference_mos, reference_mos)
        none = self.module.attribute_targets(())
        items = [self._item(image, reference_mos, kept, none, index, -1, 0, ref_index)
                 for image in [crop, *(image for _, image in group.styled)]]
        _, twin, attributes = group.twin
        twin_targets = {**none, **attributes}
        # The twin's pseudo-MOS only feeds the ranking loss (below every kept version).
        items.append(self._item(twin, reference_mos * 0.3, CLASS_INDEX["rejected"],
                                twin_targets, index, -1, max(self.module.LEVELS), ref_index))
        return items

    def __getitem__(self, index: int) -> dict:
        if index >= len(self.synthetic):
            items = self._styles(index)
        elif self.ladder_levels:
            items = self._ladder(index)
        else:
            sample = self.synthetic[index]
            items = [self._item(sample.image, sample.pseudo_mos, sample.label, sample.attributes,
                                -1, -1, sample.max_level,
                                self.synthetic.references.index(sample.reference_path))]
        return {key: torch.stack([item[key] for item in items]) for key in items[0]}


def collate_groups(groups: list[dict]) -> dict:
    """Batch of synthetic groups [G, ...] -> one flat batch."""
    return {key: torch.cat([group[key] for group in groups]) for key in groups[0]}


def concat_batches(batches: Sequence[dict]) -> dict:
    """Record batch + synthetic batch -> one batch (same keys on both sides)."""
    batches = [b for b in batches if b is not None]
    if len(batches) == 1:
        return batches[0]
    return {key: torch.cat([b[key] for b in batches]) for key in batches[0]}
