"""The `train` section of a config: every option with its default, merging, and what the
training data settles (the attribute heads). No torch: `iqs train` checks a config before it
reads any data.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import warnings
from collections.abc import Sequence

from iqs_cli.vocabulary import DEFAULT_ATTRIBUTES, InputSpec  # noqa: F401 (re-exported)
from .datasets.base import DataWarning, Record
from .datasets.synthetic import ATTRIBUTES as SYNTHETIC_ATTRIBUTES

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


def config_digest(cfg: dict) -> str:
    """What a resumed run must share with the run it continues: everything but the epochs."""
    without_epochs = {k: v for k, v in cfg.items() if k != "epochs"}
    return hashlib.sha256(json.dumps(without_epochs, sort_keys=True, default=str).encode()).hexdigest()


def input_spec(cfg: dict) -> InputSpec:
    """The model input a config asks for: its `input` gives size, resize and crop."""
    return InputSpec.from_dict({k: v for k, v in cfg["input"].items() if k in ("size", "resize", "crop")})


def default_attributes(records: Sequence[Record], synthetic: bool) -> list[str]:
    """Attribute targets the training data has: DEFAULT_ATTRIBUTES order first, then others."""
    present = {name for r in records for name in r.attributes}
    if synthetic:
        present |= set(SYNTHETIC_ATTRIBUTES)
    return [a for a in DEFAULT_ATTRIBUTES if a in present] + sorted(present - set(DEFAULT_ATTRIBUTES))


def labelled_attributes(attributes: Sequence[str], records: Sequence[Record],
                        synthetic: bool) -> tuple[list[str], list[str]]:
    """(attributes some training target labels, attributes nothing labels). Synthetic
    distortions label every attribute of training.datasets.synthetic."""
    labelled = {name for r in records for name, value in r.attributes.items()
                if value is not None and math.isfinite(value)}
    if synthetic:
        labelled |= set(SYNTHETIC_ATTRIBUTES)
    return ([a for a in attributes if a in labelled], [a for a in attributes if a not in labelled])


def settle_attributes(cfg: dict, train_records: Sequence[Record]) -> list[str]:
    """The attribute heads the model gets (also stored as cfg["attributes"]): the configured
    ones, or those the data has, less those nothing labels. Refuses a run without training
    data; warns (DataWarning, shown at the caller of train_model) about labels nothing gives."""
    synthetic = cfg["synthetic"]["enabled"]
    if cfg["attributes"] is None:
        cfg["attributes"] = default_attributes(train_records, synthetic)
    if not train_records and not synthetic:
        raise TrainError("no training data: the config gives no training records and synthetic "
                         "distortions are off")
    attributes, unlabelled = labelled_attributes(cfg["attributes"], train_records, synthetic)
    if unlabelled:
        # A head that never saw a label would still give severities, and the card would offer
        # them as reasons: leave it out of the model (and so of the export and its card).
        warnings.warn(DataWarning(
            f"no training photo has a label for the attribute(s) {', '.join(unlabelled)}"
            f"{'' if synthetic else ' and synthetic distortions are off'}: "
            "left out of the model, so it will not give them as reasons; label them in the "
            "data or enable \"synthetic\" in the config"), stacklevel=3)
        cfg["attributes"] = attributes
    if train_records and not synthetic:
        # The class and MOS heads are part of the model contract: they cannot be left out.
        if all(r.label is None for r in train_records):
            warnings.warn(DataWarning(
                "no training photo has a class (rejected/pending/accepted): the pick labels of "
                "this model mean nothing; give the data classes (a class column in a CSV, or "
                "class_rules in the config)"),
                stacklevel=3)
        if all(r.mos is None for r in train_records):
            warnings.warn(DataWarning(
                "no training photo has a MOS: the MOS and stars of this model mean nothing; give "
                "the data scores (a mos column in a CSV)"), stacklevel=3)
    return attributes
