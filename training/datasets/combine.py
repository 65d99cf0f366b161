"""Combining public datasets into one training set, from a plain JSON config
(training/configs/combined.json): for each dataset its reader, folder, split, and the class
rules that turn its 0-100 MOS into rejected / pending / accepted; then class-balanced sampling
weights, and per-dataset confusion matrices for evaluation. No torch here.

Class rules are an ordered list evaluated on the normalized 0-100 MOS, first match wins:

    {"mos_below": 35, "label": "rejected"}
    {"mos_at_least": 35, "mos_below": 45, "mos_only": true}
    {"mos_at_least": 45, "label": "pending"}

`mos_at_least` is inclusive, `mos_below` exclusive, a missing bound is open. Each rule gives
exactly one outcome: a `label`, `"mos_only": true` (the image keeps its MOS and attribute
targets but gets no class: for ambiguous bands), or `"exclude": true` (the image is left out
and counted). The ranges must tile 0-100 exactly, without gaps or overlaps, so every image gets
one outcome by rule: a gap is an error, never a silent inheritance of a neighbour's label.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from iqs_cli.vocabulary import CLASS_INDEX, CLASSES
from .base import DatasetError, Record
from .csvfile import (
    DatasetWarning,
    RowProblems,
    cell,
    find_columns,
    read_rows,
    resolve_under,
)
from .registry import ATTRIBUTE_NAMES, DEFAULT_KIND, READERS, read_dataset

SPLITS = ("train", "val", "test")
KINDS = ("ordinary", "artistic")
STRATIFY_BLOCK = 20  # records per MOS block in which val/test slots are dealt out

# Defaults when a config entry gives no class_rules (thresholds on the 0-100 MOS).
# ordinary: low MOS = visibly distorted -> rejected; the band just above is ambiguous and only
# trains the MOS head; the rest are sound snapshots, which are not artistic -> pending.
# artistic: the AVA means 5 and 6 of the original digiKam recipe, on AVA's (mean-1)/9*100:
# below 5 -> pending, 6 and up -> accepted, in between left out on purpose.
DEFAULT_RULES: dict[str, list[dict[str, Any]]] = {
    "ordinary": [
        {"mos_below": 35, "label": "rejected"},
        {"mos_at_least": 35, "mos_below": 45, "mos_only": True},
        {"mos_at_least": 45, "label": "pending"},
    ],
    "artistic": [
        {"mos_below": 44.4444, "label": "pending"},
        {"mos_at_least": 44.4444, "mos_below": 55.5555, "exclude": True},
        {"mos_at_least": 55.5555, "label": "accepted"},
    ],
}

RULE_KEYS = ("mos_at_least", "mos_below", "label", "mos_only", "exclude", "notes")
SPLIT_KEYS = ("file", "seed", "val", "test", "stratify", "unlisted", "notes")
SAMPLING_KEYS = ("balance_classes", "notes")
DATASET_KEYS = (
    "name", "reader", "root", "labels", "images", "options", "kind", "use_mos", "class_rules",
    "split", "split_with", "weight", "max_images", "allow_missing", "optional", "notes",
)
SPLIT_NAMES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}


# ---------------------------------------------------------------------------- class rules


@dataclass(frozen=True)
class ClassRule:
    lower: float  # inclusive; -inf when open
    upper: float  # exclusive; +inf when open
    outcome: str  # "rejected" | "pending" | "accepted" | "mos_only" | "exclude"

    def contains(self, mos):
        """Whether `mos` falls in this rule's range (works elementwise on numpy arrays too)."""
        return (mos >= self.lower) & (mos < self.upper)

    def describe(self) -> str:
        if self.lower == -math.inf and self.upper == math.inf:
            return "any MOS"
        if self.lower == -math.inf:
            return f"MOS < {self.upper:g}"
        if self.upper == math.inf:
            return f"MOS >= {self.lower:g}"
        return f"{self.lower:g} <= MOS < {self.upper:g}"


@dataclass(frozen=True)
class ClassRules:
    dataset: str
    rules: tuple[ClassRule, ...]

    @classmethod
    def parse(cls, data: Any, dataset: str) -> "ClassRules":
        """Validate a rule list: one outcome per rule, ranges tiling 0-100 exactly."""
        where = f"{dataset}: class_rules"
        if not isinstance(data, list) or not data:
            raise DatasetError(f"{where} must be a non-empty list of rules")
        rules = []
        for number, item in enumerate(data, start=1):
            at = f"{where} rule {number}"
            if not isinstance(item, dict):
                raise DatasetError(f"{at} must be an object like {{\"mos_below\": 35, ...}}")
            _check_keys(item, RULE_KEYS, at)
            lower = _number(item.get("mos_at_least", -math.inf), f"{at} mos_at_least")
            upper = _number(item.get("mos_below", math.inf), f"{at} mos_below")
            if not lower < upper:
                raise DatasetError(f"{at}: mos_at_least {lower:g} is not below mos_below {upper:g}")
            outcomes = []
            if "label" in item:
                if not isinstance(item["label"], str) or item["label"] not in CLASS_INDEX:
                    raise DatasetError(
                        f"{at}: label {item['label']!r} is not one of {', '.join(CLASSES)}"
                    )
                outcomes.append(item["label"])
            for flag in ("mos_only", "exclude"):
                if flag in item:
                    if item[flag] is not True:
                        raise DatasetError(f"{at}: {flag} can only be true (or left out)")
                    outcomes.append(flag)
            if len(outcomes) != 1:
                raise DatasetError(
                    f"{at} must give exactly one of \"label\", \"mos_only\": true, "
                    f"\"exclude\": true (it gives {len(outcomes)})"
                )
            rules.append(ClassRule(lower, upper, outcomes[0]))
        _check_tiling(rules, where)
        return cls(dataset, tuple(rules))

    def outcome(self, mos: float) -> str:
        for rule in self.rules:
            if rule.contains(mos):
                return rule.outcome
        raise DatasetError(f"{self.dataset}: no class rule matches MOS {mos!r}")


def _check_tiling(rules: list[ClassRule], where: str) -> None:
    """The ranges must cover 0..100 (both ends included) with no gap and no overlap."""
    ordered = sorted(enumerate(rules, start=1), key=lambda item: item[1].lower)
    first_number, first = ordered[0]
    if first.lower > 0:
        raise DatasetError(
            f"{where} leave 0 <= MOS < {first.lower:g} without an outcome; add a rule "
            "for it (\"exclude\": true or \"mos_only\": true where that is meant)"
        )
    for (number_a, a), (number_b, b) in zip(ordered, ordered[1:]):
        if b.lower < a.upper:
            raise DatasetError(
                f"{where}: rules {min(number_a, number_b)} and {max(number_a, number_b)} overlap "
                f"({a.describe()} and {b.describe()}); ranges must not overlap"
            )
        if b.lower > a.upper:
            raise DatasetError(
                f"{where} leave {a.upper:g} <= MOS < {b.lower:g} without an outcome; add a rule "
                "for it (\"exclude\": true or \"mos_only\": true where that is meant)"
            )
    last = ordered[-1][1]
    if last.upper <= 100:
        raise DatasetError(
            f"{where} leave MOS {last.upper:g} to 100 without an outcome (mos_below is "
            "exclusive); leave mos_below out of the last rule"
        )


# ---------------------------------------------------------------------------- config


@dataclass(frozen=True)
class SplitSpec:
    file: str | None = None  # CSV of image,split (relative to the dataset root)
    seed: int = 0
    val: float = 0.1
    test: float = 0.0
    stratify: str = "mos"  # "mos" | "none"
    unlisted: str = "error"  # images missing from the split file: "error" | "exclude" | "train"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    reader: str
    root: str
    labels: str | None
    images: str | None
    options: dict
    kind: str
    use_mos: bool
    rules: ClassRules
    split: SplitSpec
    split_with: str | None
    weight: float
    max_images: int | None
    allow_missing: bool
    optional: bool


@dataclass(frozen=True)
class CombinedConfig:
    name: str
    datasets: tuple[DatasetSpec, ...]
    balance_classes: bool
    raw: dict  # the whole config; "input" and "train" are read by the train loop


def _check_keys(data: dict, allowed: Sequence[str], where: str) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise DatasetError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; allowed: "
            f"{', '.join(allowed)}"
        )


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise DatasetError(f"{where} must be a number, got {value!r}")
    return float(value)


def _boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise DatasetError(f"{where} must be true or false, got {value!r}")
    return value


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise DatasetError(f"{where} must be a non-empty string, got {value!r}")
    return value


def _parse_split(data: Any, where: str) -> SplitSpec:
    if data is None:
        return SplitSpec()
    if not isinstance(data, dict):
        raise DatasetError(f"{where} must be an object like {{\"seed\": 0, \"val\": 0.1}}")
    _check_keys(data, SPLIT_KEYS, where)
    if "file" in data:
        extra = sorted(set(data) & {"val", "test", "stratify"})
        if extra:
            raise DatasetError(f"{where}: a split file decides the split; drop {', '.join(extra)}")
        unlisted = data.get("unlisted", "error")
        if unlisted not in ("error", "exclude", "train"):
            raise DatasetError(f"{where} unlisted must be error, exclude or train")
        return SplitSpec(file=_text(data["file"], f"{where} file"), unlisted=unlisted)
    if "unlisted" in data:
        raise DatasetError(f"{where}: unlisted only applies with a split file")
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DatasetError(f"{where} seed must be a whole number, got {seed!r}")
    val = _number(data.get("val", 0.1), f"{where} val")
    test = _number(data.get("test", 0.0), f"{where} test")
    if val < 0 or test < 0 or val + test > 1:
        raise DatasetError(f"{where}: val and test must be >= 0 with val + test <= 1")
    stratify = data.get("stratify", "mos")
    if stratify not in ("mos", "none"):
        raise DatasetError(f"{where} stratify must be \"mos\" or \"none\", got {stratify!r}")
    return SplitSpec(seed=seed, val=val, test=test, stratify=stratify)


def _parse_dataset(data: Any, number: int, earlier: list[str]) -> DatasetSpec:
    where = f"datasets[{number}]"
    if not isinstance(data, dict):
        raise DatasetError(f"{where} must be an object with at least \"name\" and \"root\"")
    name = _text(data.get("name"), f"{where} name")
    where = f"dataset {name!r}"
    _check_keys(data, DATASET_KEYS, where)
    reader = _text(data.get("reader", name), f"{where} reader")
    if reader not in READERS:
        raise DatasetError(f"{where}: unknown reader {reader!r}; known: {', '.join(READERS)}")
    kind = data.get("kind", DEFAULT_KIND.get(reader))
    if kind not in KINDS:
        raise DatasetError(f"{where} needs \"kind\": \"ordinary\" or \"artistic\" (got {kind!r})")
    use_mos = _boolean(data.get("use_mos", kind == "ordinary"), f"{where} use_mos")
    rules = ClassRules.parse(data.get("class_rules", DEFAULT_RULES[kind]), name)
    if not use_mos and any(rule.outcome == "mos_only" for rule in rules.rules):
        raise DatasetError(
            f"{where}: a mos_only rule keeps images only for the MOS head, which this dataset "
            "does not train (use_mos is false); use \"exclude\": true instead"
        )
    options = data.get("options", {})
    if not isinstance(options, dict):
        raise DatasetError(f"{where} options must be an object of reader options")
    for reserved in ("images", "allow_missing"):
        if reserved in options:
            raise DatasetError(f"{where}: give {reserved!r} beside \"options\", not inside it")
    split_with = data.get("split_with")
    if split_with is not None and split_with not in earlier:
        raise DatasetError(
            f"{where}: split_with {split_with!r} must name a dataset listed before it"
        )
    weight = _number(data.get("weight", 1.0), f"{where} weight")
    if weight < 0:
        raise DatasetError(f"{where} weight must be >= 0")
    max_images = data.get("max_images")
    if max_images is not None and (
        isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1
    ):
        raise DatasetError(f"{where} max_images must be a positive whole number or null")
    labels = data.get("labels")
    images = data.get("images")
    return DatasetSpec(
        name=name,
        reader=reader,
        root=_text(data.get("root", name), f"{where} root"),
        labels=None if labels is None else _text(labels, f"{where} labels"),
        images=None if images is None else _text(images, f"{where} images"),
        options=dict(options),
        kind=kind,
        use_mos=use_mos,
        rules=rules,
        split=_parse_split(data.get("split"), f"{where} split"),
        split_with=split_with,
        weight=weight,
        max_images=max_images,
        allow_missing=_boolean(data.get("allow_missing", False), f"{where} allow_missing"),
        optional=_boolean(data.get("optional", False), f"{where} optional"),
    )


def parse_config(config: dict | Path | str) -> CombinedConfig:
    """Read (a path) and validate a combining config; every mistake is a DatasetError."""
    if not isinstance(config, dict):
        path = Path(config).expanduser()
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise DatasetError(f"cannot read config {path} ({exc.strerror or exc})") from exc
        except json.JSONDecodeError as exc:
            raise DatasetError(
                f"config {path} is not valid JSON: {exc.msg} at line {exc.lineno}, column "
                f"{exc.colno}"
            ) from exc
        if not isinstance(config, dict):
            raise DatasetError(f"config {path} must hold a JSON object")
    entries = config.get("datasets")
    if not isinstance(entries, list) or not entries:
        raise DatasetError("config needs \"datasets\": a non-empty list of datasets")
    datasets: list[DatasetSpec] = []
    for number, entry in enumerate(entries):
        spec = _parse_dataset(entry, number, [d.name for d in datasets])
        if any(d.name == spec.name for d in datasets):
            raise DatasetError(f"config lists dataset {spec.name!r} twice; names must differ")
        datasets.append(spec)
    sampling = config.get("sampling", {})
    if not isinstance(sampling, dict):
        raise DatasetError("config \"sampling\" must be an object")
    _check_keys(sampling, SAMPLING_KEYS, "sampling")
    return CombinedConfig(
        name=str(config.get("name", "combined")),
        datasets=tuple(datasets),
        balance_classes=_boolean(sampling.get("balance_classes", True), "sampling balance_classes"),
        raw=config,
    )


# ---------------------------------------------------------------------------- splits


def _digest(*parts: object) -> str:
    """Order key that is the same on every machine and Python version (unlike hash())."""
    return hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).hexdigest()


def _round(value: float) -> int:
    return math.floor(value + 0.5)


def stratified_split(
    keys: Sequence[str],
    scores: Sequence[float | None],
    seed: int,
    val: float,
    test: float,
    stratify: bool = True,
    classes: Sequence[int | None] | None = None,
) -> list[str]:
    """"train"/"val"/"test" for each key. Sorted by score (records without one after those
    with one, by class; ties by key), the records are dealt in blocks of 20: each block gives
    val and test their share (running totals rounded, so the whole matches the fractions),
    picked inside the block by a seeded hash of the key. So every MOS range is split alike, and
    the result depends only on the keys, scores and seed: the same on every run and machine."""
    n = len(keys)
    classes = classes if classes is not None else [None] * n

    def rank(i: int) -> tuple:
        if scores[i] is not None:
            return (0, float(scores[i]), keys[i])
        return (1, -1 if classes[i] is None else classes[i], keys[i])

    if stratify:
        order = sorted(range(n), key=rank)
    else:
        order = sorted(range(n), key=lambda i: _digest("order", seed, keys[i]))
    result = ["train"] * n
    for start in range(0, n, STRATIFY_BLOCK):
        end = min(n, start + STRATIFY_BLOCK)
        block = sorted(order[start:end], key=lambda i: _digest(seed, keys[i]))
        n_val = _round(val * end) - _round(val * start)
        n_test = min(_round(test * end) - _round(test * start), len(block) - n_val)
        for position, index in enumerate(block):
            if position < n_val:
                result[index] = "val"
            elif position < n_val + n_test:
                result[index] = "test"
    return result


def read_split_file(dataset: str, path: Path) -> dict[str, str]:
    """image name -> "train"/"val"/"test" from a CSV with an image column and a split/set
    column (KonIQ's official koniq10k_distributions_sets.csv is one)."""
    if not path.is_file():
        raise DatasetError(f"{dataset}: split file {path} not found; check \"split\": {{\"file\"}}")
    rows = read_rows(dataset, path)
    if not rows:
        raise DatasetError(f"{dataset}: split file {path} is empty")
    columns = find_columns(
        dataset,
        path,
        rows[0][1],
        {"image": ("image", "image_name", "image name", "path", "file", "filename"),
         "split": ("split", "set")},
        ("image", "split"),
    )
    problems = RowProblems(dataset, path)
    splits: dict[str, str] = {}
    for line, row in rows[1:]:
        name = cell(row, columns["image"])
        value = cell(row, columns["split"]).lower()
        if not name:
            problems.add(line, "no image name")
        elif value not in SPLIT_NAMES:
            problems.add(line, f"split {value!r} is not train, val (validation) or test")
        else:
            splits[name] = SPLIT_NAMES[value]
    problems.settle(strict=True)
    return splits


def _split_from_file(
    records: list[Record], keys: list[str], splits: dict[str, str]
) -> list[str | None]:
    by_name = {Path(name).name: split for name, split in splits.items()}
    by_stem = {Path(name).stem: split for name, split in splits.items()}
    out: list[str | None] = []
    for record, key in zip(records, keys):
        out.append(
            splits.get(key) or by_name.get(record.path.name) or by_stem.get(record.path.stem)
        )
    return out


# ---------------------------------------------------------------------------- combining


@dataclass
class CombinedData:
    name: str
    train: list[Record]
    val: list[Record]
    test: list[Record]
    # dataset -> read, over_max_images, excluded, not_in_split_file, rejected, pending,
    # accepted, mos_only, train, val, test
    counts: dict[str, dict[str, int]]
    class_counts: dict[str, dict[str, int]]  # split -> rejected/pending/accepted/none -> n
    excluded: dict[str, int]  # dataset -> images left out by an "exclude" rule
    dataset_weights: dict[str, float]
    balance_classes: bool
    attribute_names: tuple[str, ...]  # attribute targets some record has
    warnings: list[str] = field(default_factory=list)  # what readers skipped, for the run log
    skipped: list[str] = field(default_factory=list)  # optional datasets not found
    config: dict = field(default_factory=dict)  # the whole config ("input", "train", ...)

    def split(self, name: str) -> list[Record]:
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def summary(self) -> str:
        """A plain-text table of what was read, labelled, left out and split, per dataset."""
        columns = ("read", "excluded", "rejected", "pending", "accepted", "mos_only",
                   "train", "val", "test")
        width = max([len("dataset")] + [len(name) for name in self.counts])
        lines = ["  ".join(["dataset".ljust(width)] + [c.rjust(8) for c in columns])]
        for name, counts in self.counts.items():
            excluded = counts["excluded"] + counts["not_in_split_file"] + counts["over_max_images"]
            values = [counts["read"], excluded] + [counts[c] for c in columns[2:]]
            lines.append("  ".join([name.ljust(width)] + [str(v).rjust(8) for v in values]))
        for name in self.skipped:
            lines.append(f"{name}: not found, skipped (optional)")
        lines.extend(self.warnings)
        return "\n".join(lines)


def _record_key(record: Record, root: Path) -> str:
    """Machine-independent name of a record: its path below the dataset folder."""
    try:
        return record.path.relative_to(root).as_posix()
    except ValueError:
        return record.path.as_posix()


def load_combined(
    config: dict | Path | str, data_root: Path | str, allow_missing: bool = False
) -> CombinedData:
    """Read every dataset of the config under data_root, label it by its class rules, split it
    and weight the training records for sampling (Record.weight)."""
    spec_all = parse_config(config)
    data_root = Path(data_root).expanduser().absolute()
    if not data_root.is_dir():
        raise DatasetError(f"--data-root {data_root} is not a folder")
    parts: dict[str, list[Record]] = {name: [] for name in SPLITS}
    counts: dict[str, dict[str, int]] = {}
    split_of_stem: dict[str, dict[str, str]] = {}
    messages: list[str] = []
    skipped: list[str] = []
    for spec in spec_all.datasets:
        root = resolve_under(data_root, spec.root).absolute()
        if not root.is_dir():
            if spec.optional:
                skipped.append(spec.name)
                continue
            raise DatasetError(
                f"{spec.name}: folder {root} not found (\"root\": {spec.root!r} under --data-root "
                f"{data_root}); point --data-root at the folder that holds {spec.root}/, or mark "
                "the dataset \"optional\": true, or remove it from the config"
            )
        kept, counts[spec.name] = _load_dataset(spec, root, allow_missing, messages, split_of_stem)
        for record in kept:
            parts[record.split].append(record)

    dataset_weights = {spec.name: spec.weight for spec in spec_all.datasets if spec.name in counts}
    for record, weight in zip(
        parts["train"],
        sample_weights(parts["train"], spec_all.balance_classes, dataset_weights),
    ):
        record.weight = weight
    class_counts = {}
    for split in SPLITS:
        labels = Counter(record.label for record in parts[split])
        class_counts[split] = {name: labels[CLASS_INDEX[name]] for name in CLASSES}
        class_counts[split]["none"] = labels[None]
    present = {name for split in SPLITS for r in parts[split] for name in r.attributes}
    attribute_names = tuple(name for name in ATTRIBUTE_NAMES if name in present) + tuple(
        sorted(present - set(ATTRIBUTE_NAMES))
    )
    return CombinedData(
        name=spec_all.name,
        train=parts["train"],
        val=parts["val"],
        test=parts["test"],
        counts=counts,
        class_counts=class_counts,
        excluded={name: tally["excluded"] for name, tally in counts.items()},
        dataset_weights=dataset_weights,
        balance_classes=spec_all.balance_classes,
        attribute_names=attribute_names,
        warnings=messages,
        skipped=skipped,
        config=spec_all.raw,
    )


def _load_dataset(
    spec: DatasetSpec,
    root: Path,
    allow_missing: bool,
    messages: list[str],
    split_of_stem: dict[str, dict[str, str]],
) -> tuple[list[Record], dict[str, int]]:
    """One dataset read, cut to max_images, labelled by its rules and split; with its tally."""
    records = _read(spec, root, allow_missing, messages)
    tally = dict.fromkeys(
        ("read", "over_max_images", "excluded", "not_in_split_file", *CLASSES, "mos_only",
         *SPLITS),
        0,
    )
    tally["read"] = len(records)
    for record in records:
        record.dataset = spec.name
    keys = [_record_key(record, root) for record in records]

    if spec.max_images is not None and len(records) > spec.max_images:
        by_digest = sorted(
            range(len(records)), key=lambda i: _digest("subset", spec.split.seed, keys[i])
        )
        keep = set(by_digest[: spec.max_images])
        tally["over_max_images"] = len(records) - len(keep)
        records = [r for i, r in enumerate(records) if i in keep]
        keys = [k for i, k in enumerate(keys) if i in keep]

    labelled: list[tuple[Record, str]] = []
    for record, key in zip(records, keys):
        if record.label is None:  # a class given by the label file itself wins over the rules
            if record.mos is None:
                raise DatasetError(f"{spec.name}: {record.path} has neither a MOS nor a class")
            outcome = spec.rules.outcome(record.mos)
            if outcome == "exclude":
                tally["excluded"] += 1
                continue
            record.label = CLASS_INDEX.get(outcome)  # None for mos_only
        labelled.append((record, key))
    records = [record for record, _ in labelled]
    keys = [key for _, key in labelled]

    kept = []
    for record, split in zip(records, _assign_splits(spec, root, records, keys, split_of_stem)):
        if split is None:
            tally["not_in_split_file"] += 1
            continue
        record.split = split
        if not spec.use_mos:
            record.mos = None  # its score decided the class; raw_score keeps it
        kept.append(record)
        tally[split] += 1
        tally[CLASSES[record.label] if record.label is not None else "mos_only"] += 1
    split_of_stem[spec.name] = {record.path.stem: record.split for record in kept}
    return kept, tally


def _read(spec: DatasetSpec, root: Path, allow_missing: bool, messages: list[str]) -> list[Record]:
    """Run the dataset's reader; its DatasetWarnings go to `messages`, other warnings pass on."""
    options = dict(spec.options)
    if spec.images is not None:
        options["images"] = spec.images
    options["allow_missing"] = spec.allow_missing or allow_missing
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            records = read_dataset(spec.reader, root, spec.labels, **options)
        except DatasetError as exc:
            if spec.name == spec.reader:
                raise
            raise DatasetError(f"dataset {spec.name!r}: {exc}") from exc
    for warning in caught:
        if issubclass(warning.category, DatasetWarning):
            messages.append(str(warning.message))
        else:
            warnings.warn_explicit(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    return records


def _assign_splits(
    spec: DatasetSpec,
    root: Path,
    records: list[Record],
    keys: list[str],
    split_of_stem: dict[str, dict[str, str]],
) -> list[str | None]:
    """Each record's split (None = not in the split file, left out on purpose)."""
    own: list[str | None]
    if spec.split.file is not None:
        listed = read_split_file(spec.name, resolve_under(root, spec.split.file))
        own = _split_from_file(records, keys, listed)
        unlisted = [record for record, split in zip(records, own) if split is None]
        if unlisted and spec.split.unlisted == "error":
            names = ", ".join(record.path.name for record in unlisted[:5])
            raise DatasetError(
                f"{spec.name}: {len(unlisted)} images are not in split file {spec.split.file} "
                f"(first: {names}); add them, or set \"unlisted\": \"exclude\" or \"train\""
            )
        if spec.split.unlisted == "train":
            own = [split or "train" for split in own]
    else:
        own = list(
            stratified_split(
                keys,
                [record.mos for record in records],
                spec.split.seed,
                spec.split.val,
                spec.split.test,
                stratify=spec.split.stratify == "mos",
                classes=[record.label for record in records],
            )
        )
    if spec.split_with is not None and spec.split_with in split_of_stem:
        # the same picture in another dataset (EVA re-rates AVA photos) takes that split
        twin = split_of_stem[spec.split_with]
        own = [twin.get(record.path.stem, split) for record, split in zip(records, own)]
    return own


# ---------------------------------------------------------------------------- sampling, eval


def sample_weights(
    records: Sequence[Record],
    balance_classes: bool = True,
    dataset_weights: dict[str, float] | None = None,
) -> list[float]:
    """Per-record weights for a WeightedRandomSampler (mean 1).

    Each dataset first gets a share of the draws proportional to its weight in
    `dataset_weights` (default 1), however many images it has. With balance_classes, the
    labelled records are then rescaled so that rejected, pending and accepted (those present)
    are drawn equally often, keeping the dataset proportions inside each class; records
    without a class (mos_only) keep their share."""
    if not records:
        return []
    dataset_weights = dataset_weights or {}
    sizes = Counter(record.dataset for record in records)
    weights = [dataset_weights.get(r.dataset, 1.0) / sizes[r.dataset] for r in records]
    if balance_classes:
        mass: dict[int | None, float] = defaultdict(float)
        for record, weight in zip(records, weights):
            mass[record.label] += weight
        present = [label for label in range(len(CLASSES)) if mass.get(label, 0.0) > 0]
        if present:
            each = sum(mass[label] for label in present) / len(present)
            weights = [
                weight * each / mass[record.label] if record.label in present else weight
                for record, weight in zip(records, weights)
            ]
    total = sum(weights)
    if total <= 0:
        raise DatasetError(
            "every training image has sampling weight 0; give at least one dataset a weight > 0"
        )
    return [weight * len(records) / total for weight in weights]


def _class_number(value: Any) -> int:
    if isinstance(value, str):
        if value in CLASS_INDEX:
            return CLASS_INDEX[value]
    else:
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = -1
        if number == value and 0 <= number < len(CLASSES):
            return number
    raise ValueError(f"predicted label {value!r} is not 0, 1, 2 or one of {', '.join(CLASSES)}")


def confusion_by_dataset(
    records: Sequence[Record], predicted_labels: Iterable[Any]
) -> dict[str, list[list[int]]]:
    """dataset -> 3x3 counts, rows the true class, columns the predicted one (order rejected,
    pending, accepted). Records without a class are skipped. A model that learned "which
    dataset" instead of quality shows up as datasets whose rows pile into one column."""
    predicted = list(predicted_labels)
    if len(predicted) != len(records):
        raise ValueError(f"{len(records)} records but {len(predicted)} predicted labels")
    matrices: dict[str, list[list[int]]] = {}
    for record, guess in zip(records, predicted):
        if record.label is None:
            continue
        matrix = matrices.setdefault(record.dataset, [[0] * len(CLASSES) for _ in CLASSES])
        matrix[record.label][_class_number(guess)] += 1
    return matrices
