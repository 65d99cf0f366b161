"""Combining datasets: combined.json against a data root built from the real label layouts,
the class rules (every image gets exactly one outcome), splits, sampling weights and the
per-dataset confusion matrices."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import make_photo
from iqs_cli.vocabulary import CLASS_INDEX
from iqs_training.datasets.base import DatasetError, Record
from iqs_training.datasets.combine import (
    DEFAULT_RULES,
    ClassRules,
    confusion_by_dataset,
    load_combined,
    parse_config,
    sample_weights,
    stratified_split,
)

COMBINED = Path(__file__).resolve().parent.parent / "training" / "configs" / "combined.json"


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


@pytest.fixture(scope="module")
def data_root(shared_data, tmp_path_factory) -> Path:
    """A --data-root laid out as combined.json expects, from the label-format excerpts, with a
    tiny JPEG for every listed image (the excerpts ship only a few) and the CLIVE labels."""
    formats = shared_data / "label-formats"
    root = tmp_path_factory.mktemp("data-root")
    for name in ("koniq10k", "spaq", "ava", "eva"):
        shutil.copytree(formats / name, root / name, ignore=shutil.ignore_patterns("images"))
    with open(formats / "koniq10k" / "koniq10k_scores_and_distributions.csv") as handle:
        names = [row["image_name"] for row in csv.DictReader(handle)]
    with open(formats / "spaq" / "SPAQ_annotations.csv", encoding="utf-8-sig") as handle:
        spaq = [row["Image name"] for row in csv.DictReader(handle)]
    with open(formats / "ava" / "AVA.txt") as handle:
        ava = [line.split()[1] for line in handle if line.strip()]
    with open(formats / "eva" / "votes_filtered.csv") as handle:
        eva = sorted({line.split("=")[0] for line in list(handle)[1:]})
    for number, name in enumerate(names):
        make_photo(root / "koniq10k" / "1024x768" / name, size=(8, 6), seed=number)
    for number, name in enumerate(spaq):
        make_photo(root / "spaq" / "images" / name, size=(8, 6), seed=number)
    for number, image_id in enumerate(ava):
        make_photo(root / "ava" / "images" / f"{image_id}.jpg", size=(8, 6), seed=number)
    for number, image_id in enumerate(eva):
        make_photo(root / "eva" / "images" / "all" / f"{image_id}.jpg", size=(8, 6), seed=number)
    (root / "clive" / "images").mkdir(parents=True)
    with open(shared_data / "clive" / "labels.csv") as handle:
        rows = list(csv.DictReader(handle))[:60]
    with open(root / "clive" / "labels.csv", "w") as handle:
        handle.write("image,mos,mos_std\n")
        for row in rows:
            handle.write(f"{row['image']},{row['mos']},{row['mos_std']}\n")
            touch(root / "clive" / "images" / row["image"])
    return root


@pytest.fixture(scope="module")
def combined(data_root):
    return load_combined(COMBINED, data_root)


def ava_means(shared_data) -> dict[str, float]:
    means = {}
    with open(shared_data / "label-formats" / "ava" / "AVA.txt") as handle:
        for line in handle:
            fields = line.split()
            counts = [int(v) for v in fields[2:12]]
            means[fields[1]] = sum(s * n for s, n in zip(range(1, 11), counts)) / sum(counts)
    return means


# ---------------------------------------------------------------------------- combined.json


def test_combined_json_loads_every_dataset(combined):
    assert set(combined.counts) == {"koniq10k", "spaq", "ava", "eva", "clive"}
    assert combined.skipped == [] and combined.warnings == []
    assert combined.counts["koniq10k"]["read"] == 40
    assert combined.counts["eva"]["read"] == 12
    assert combined.attribute_names == ("blur", "noise", "underexposure", "color")
    assert combined.config["train"]["input"] == {"size": 384, "resize": "squash"}
    # LIVE Challenge is held out whole
    assert combined.counts["clive"]["test"] == 60
    assert combined.counts["clive"]["train"] == combined.counts["clive"]["val"] == 0
    assert combined.summary().splitlines()[0].split()[:3] == ["dataset", "read", "excluded"]


def test_combined_json_train_section_is_one_the_train_loop_accepts():
    pytest.importorskip("torch")
    from iqs_training.config import merge_config

    train = merge_config(json.loads(COMBINED.read_text())["train"])
    assert train["input"]["size"] == 384


def test_every_image_gets_one_label_by_rule_or_is_excluded_and_counted(combined):
    records = combined.train + combined.val + combined.test
    for name, counts in combined.counts.items():
        outcomes = sum(counts[k] for k in ("rejected", "pending", "accepted", "mos_only"))
        dropped = counts["excluded"] + counts["not_in_split_file"] + counts["over_max_images"]
        assert counts["read"] == outcomes + dropped, name
        assert outcomes == counts["train"] + counts["val"] + counts["test"], name
        assert outcomes == sum(1 for r in records if r.dataset == name), name
    assert combined.excluded == {name: c["excluded"] for name, c in combined.counts.items()}
    spec = {d["name"]: d for d in json.loads(COMBINED.read_text())["datasets"]}
    rules = {name: ClassRules.parse(d["class_rules"], name) for name, d in spec.items()}
    normalize = {
        "koniq10k": lambda raw: (raw - 1) / 4 * 100,
        "spaq": lambda raw: raw,
        "clive": lambda raw: raw,
        "ava": lambda raw: (raw - 1) / 9 * 100,
        "eva": lambda raw: raw * 10,
    }
    for record in records:
        outcome = rules[record.dataset].outcome(normalize[record.dataset](record.raw_score))
        assert outcome != "exclude"
        expected = None if outcome == "mos_only" else CLASS_INDEX[outcome]
        assert record.label == expected, record


def test_ava_means_between_5_and_6_are_excluded_not_inherited(combined, shared_data):
    """The original recipe left AVA means in (5, 6) unlabelled; here they are counted out."""
    means = ava_means(shared_data)
    assert combined.counts["ava"]["excluded"] == sum(5 <= m < 6 for m in means.values()) == 25
    assert combined.counts["ava"]["pending"] == sum(m < 5 for m in means.values())
    assert combined.counts["ava"]["accepted"] == sum(m >= 6 for m in means.values())
    ava = [r for r in combined.train + combined.val + combined.test if r.dataset == "ava"]
    assert all(r.mos is None and r.raw_score is not None for r in ava)  # use_mos: false
    assert all(not 5 <= r.raw_score < 6 for r in ava)


@pytest.mark.parametrize(
    "name,rules",
    [(d["name"], d["class_rules"]) for d in json.loads(COMBINED.read_text())["datasets"]]
    + [(f"default-{kind}", rules) for kind, rules in DEFAULT_RULES.items()],
)
def test_rules_give_exactly_one_outcome_for_every_mos(name, rules):
    parsed = ClassRules.parse(rules, name)
    edges = [v for r in parsed.rules for v in (r.lower, r.upper) if math.isfinite(v)]
    near = [np.nextafter(e, d) for e in edges for d in (-np.inf, np.inf)]
    values = np.concatenate([np.linspace(0.0, 100.0, 200_001), edges, near, [0.0, 100.0]])
    values = values[(values >= 0) & (values <= 100)]
    matches = np.stack([rule.contains(values) for rule in parsed.rules])
    assert (matches.sum(axis=0) == 1).all()
    for column in range(0, len(values), 997):
        [index] = np.flatnonzero(matches[:, column])
        assert parsed.outcome(float(values[column])) == parsed.rules[index].outcome


@pytest.mark.parametrize(
    "rules,message",
    [
        # the original AVA recipe: nothing said for means 5..6
        ([{"mos_below": 44.4444, "label": "pending"},
          {"mos_at_least": 55.5555, "label": "accepted"}],
         "leave 44.4444 <= MOS < 55.5555 without an outcome"),
        ([{"mos_below": 50, "label": "pending"},
          {"mos_at_least": 40, "label": "accepted"}], "rules 1 and 2 overlap"),
        ([{"mos_at_least": 10, "label": "pending"}], "leave 0 <= MOS < 10 without"),
        ([{"mos_below": 100, "label": "pending"}], "leave MOS 100 to 100 without an outcome"),
        ([{"label": "pending", "exclude": True}], "exactly one of"),
        ([{"mos_bellow": 50, "label": "rejected"}, {"label": "pending"}],
         "unknown key(s) 'mos_bellow'"),
        ([{"label": "keeper"}], "label 'keeper' is not one of rejected, pending, accepted"),
        ([{"mos_at_least": 60, "mos_below": 40, "label": "pending"}], "is not below"),
        ([{"mos_below": "50", "label": "pending"}, {"mos_at_least": 50, "label": "accepted"}],
         "must be a number"),
        ([], "non-empty list"),
    ],
)
def test_bad_rules_are_refused(rules, message):
    with pytest.raises(DatasetError) as info:
        ClassRules.parse(rules, "ava")
    assert message in str(info.value)


def config_with(**changes) -> dict:
    config = json.loads(COMBINED.read_text())
    for name, entry in changes.items():
        for spec in config["datasets"]:
            if spec["name"] == name:
                spec.update(entry)
    return config


def test_mos_only_makes_no_sense_without_the_mos_head():
    config = config_with(ava={"class_rules": DEFAULT_RULES["ordinary"]})
    with pytest.raises(DatasetError, match="use \"exclude\": true instead"):
        parse_config(config)


@pytest.mark.parametrize(
    "change,message",
    [
        ({"koniq10k": {"reader": "konik"}}, "unknown reader 'konik'"),
        ({"koniq10k": {"weigth": 2}}, "unknown key(s) 'weigth'"),
        ({"koniq10k": {"split": {"val": 0.7, "test": 0.5}}}, "val + test <= 1"),
        ({"koniq10k": {"split": {"file": "s.csv", "val": 0.1}}}, "drop val"),
        ({"eva": {"split_with": "clive"}}, "must name a dataset listed before it"),
        ({"koniq10k": {"options": {"allow_missing": True}}}, "beside \"options\""),
        ({"spaq": {"name": "koniq10k"}}, "twice"),
    ],
)
def test_config_mistakes_are_named(change, message):
    with pytest.raises(DatasetError) as info:
        parse_config(config_with(**change))
    assert message in str(info.value)


def test_config_file_that_is_not_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{\n  "datasets": [\n    {"name": "koniq10k",}\n  ]\n}\n')
    with pytest.raises(DatasetError, match="not valid JSON: .* line 3"):
        parse_config(path)


def test_missing_dataset_folder_and_optional_ones(data_root, tmp_path):
    with pytest.raises(DatasetError, match="spaq: folder .* not found .*--data-root"):
        load_combined(config_with(spaq={"root": "SPAQ-missing"}), data_root)
    config = config_with(clive={"root": "no-clive-here"})
    data = load_combined(config, data_root)
    assert data.skipped == ["clive"] and "clive" not in data.counts
    assert "clive: not found, skipped (optional)" in data.summary()


def test_missing_images_error_and_allow_missing(data_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(data_root, root)
    (root / "ava" / "images" / "42039.jpg").unlink()
    with pytest.raises(DatasetError, match="1 of 40 images listed in AVA.txt are missing"):
        load_combined(COMBINED, root)
    data = load_combined(COMBINED, root, allow_missing=True)
    assert data.counts["ava"]["read"] == 39
    assert any("42039.jpg" in message for message in data.warnings)


# ---------------------------------------------------------------------------- splits


def test_splits_are_disjoint_and_the_same_on_another_machine(combined, data_root, tmp_path):
    paths = {split: {r.path for r in combined.split(split)} for split in ("train", "val", "test")}
    assert not paths["train"] & paths["val"]
    assert not paths["train"] & paths["test"]
    assert not paths["val"] & paths["test"]
    assert all(r.split == split for split in paths for r in combined.split(split))

    moved = tmp_path / "elsewhere" / "datasets"
    shutil.copytree(data_root, moved)
    again = load_combined(COMBINED, moved)

    def assignment(data, root):
        return sorted(
            (r.dataset, r.path.relative_to(root).as_posix(), r.split, r.label)
            for r in data.train + data.val + data.test
        )

    assert assignment(again, moved) == assignment(combined, data_root)


def test_seeded_split_is_stratified_by_mos():
    keys = [f"img{i:04d}.jpg" for i in range(400)]
    rng = np.random.default_rng(3)
    scores = list(rng.uniform(0, 100, 400))
    splits = stratified_split(keys, scores, seed=0, val=0.15, test=0.1)
    assert splits.count("val") == 60 and splits.count("test") == 40
    order = np.argsort(scores, kind="stable")
    for start in range(0, 400, 20):
        block = [splits[i] for i in order[start:start + 20]]
        assert block.count("val") == 3 and block.count("test") == 2
    val_scores = [s for s, split in zip(scores, splits) if split == "val"]
    assert abs(np.mean(val_scores) - np.mean(scores)) < 2.0
    # deterministic, and the seed matters
    assert stratified_split(keys, scores, 0, 0.15, 0.1) == splits
    other = stratified_split(keys, scores, 1, 0.15, 0.1)
    assert other != splits and other.count("val") == 60
    # no stratification: the same fractions, a different deal
    plain = stratified_split(keys, scores, 0, 0.15, 0.1, stratify=False)
    assert plain.count("val") == 60 and plain.count("test") == 40


def test_split_file_decides(data_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(data_root, root)
    with open(root / "koniq10k" / "koniq10k_scores_and_distributions.csv") as handle:
        names = [row["image_name"] for row in csv.DictReader(handle)]
    sets = ["training"] * 30 + ["validation"] * 5 + ["test"] * 4  # the last image left out
    with open(root / "koniq10k" / "sets.csv", "w") as handle:
        handle.write("image_name,MOS,set\n")
        for name, value in zip(names, sets):
            handle.write(f"{name},3,{value}\n")
    config = config_with(koniq10k={"split": {"file": "sets.csv"}})
    with pytest.raises(DatasetError, match="1 images are not in split file sets.csv"):
        load_combined(config, root)
    config = config_with(koniq10k={"split": {"file": "sets.csv", "unlisted": "exclude"}})
    data = load_combined(config, root)
    counts = data.counts["koniq10k"]
    assert counts["not_in_split_file"] == 1
    assert (counts["train"], counts["val"], counts["test"]) == (30, 5, 4)
    expected = dict(zip(names, ["train"] * 30 + ["val"] * 5 + ["test"] * 4))
    koniq = [r for r in data.train + data.val + data.test if r.dataset == "koniq10k"]
    assert all(r.split == expected[r.path.name] for r in koniq)


def test_eva_takes_the_split_of_its_ava_copy(tmp_path):
    root = tmp_path / "root"
    lines = []
    for i in range(60):
        counts = [0] * 10
        counts[i % 10] = 10  # means 1..10: both classes and the excluded band
        lines.append(f"{i + 1} {1000 + i} " + " ".join(map(str, counts)) + " 0 0 0")
        touch(root / "ava" / "images" / f"{1000 + i}.jpg")
    (root / "ava" / "AVA.txt").write_text("\n".join(lines) + "\n")
    votes = ["image_id=user_id=score"]
    for i in range(0, 60, 2):
        votes += [f"{1000 + i}=U{u}={(i % 10) + u % 2}" for u in range(3)]
        touch(root / "eva" / "images" / f"{1000 + i}.jpg")
    (root / "eva" / "votes_filtered.csv").write_text("\n".join(votes) + "\n")
    config = {
        "datasets": [
            {"name": "ava", "split": {"seed": 0, "val": 0.2, "test": 0.3}},
            {"name": "eva", "split_with": "ava", "split": {"seed": 5, "val": 0.5, "test": 0.5}},
        ]
    }
    data = load_combined(config, root)
    records = data.train + data.val + data.test
    ava = {r.path.stem: r.split for r in records if r.dataset == "ava"}
    eva = [r for r in records if r.dataset == "eva"]
    shared = [r for r in eva if r.path.stem in ava]
    assert shared and all(r.split == ava[r.path.stem] for r in shared)
    assert any(r.split == "train" for r in shared)  # not EVA's own 50/50 val/test deal


def test_max_images_takes_a_fixed_subset(data_root):
    config = config_with(spaq={"max_images": 10})
    first = load_combined(config, data_root)
    second = load_combined(config, data_root)
    assert first.counts["spaq"]["over_max_images"] == 30
    spaq = lambda data: sorted(str(r.path) for r in data.train + data.val + data.test
                               if r.dataset == "spaq")
    assert len(spaq(first)) + first.counts["spaq"]["excluded"] == 10
    assert spaq(first) == spaq(second)


# ---------------------------------------------------------------------------- sampling


def make_records(spec: list[tuple[str, int | None, int]]) -> list[Record]:
    records = []
    for dataset, label, count in spec:
        for i in range(count):
            records.append(Record(path=Path(f"/x/{dataset}/{label}-{i}.jpg"), dataset=dataset,
                                  mos=50.0, label=label))
    return records


def mass(records, weights, key) -> dict:
    totals: dict = {}
    for record, weight in zip(records, weights):
        totals[key(record)] = totals.get(key(record), 0.0) + weight
    return totals


def test_sample_weights_balance_classes_and_datasets():
    records = make_records([("koniq10k", 0, 10), ("koniq10k", 1, 90), ("ava", 1, 30),
                            ("ava", 2, 20), ("spaq", None, 50)])
    weights = sample_weights(records, balance_classes=True, dataset_weights={})
    assert len(weights) == len(records) and np.mean(weights) == pytest.approx(1.0)
    by_class = mass(records, weights, lambda r: r.label)
    assert by_class[0] == pytest.approx(by_class[1]) == pytest.approx(by_class[2])
    # unlabelled (mos_only) records keep their dataset's share: 1 of 3 datasets
    assert by_class[None] == pytest.approx(sum(weights) / 3)

    plain = sample_weights(records, balance_classes=False, dataset_weights={"ava": 2.0})
    by_dataset = mass(records, plain, lambda r: r.dataset)
    assert by_dataset["ava"] == pytest.approx(2 * by_dataset["koniq10k"])
    assert by_dataset["koniq10k"] == pytest.approx(by_dataset["spaq"])

    off = sample_weights(records, True, {"ava": 0.0})
    assert all(w == 0 for r, w in zip(records, off) if r.dataset == "ava")
    assert sample_weights([], True, {}) == []
    with pytest.raises(DatasetError, match="weight 0"):
        sample_weights(records, True, {"ava": 0, "koniq10k": 0, "spaq": 0})


def test_training_records_carry_their_sampling_weight(combined):
    expected = sample_weights(combined.train, True, combined.dataset_weights)
    assert [r.weight for r in combined.train] == pytest.approx(expected)
    assert all(r.weight == 1.0 for r in combined.val + combined.test)
    by_class = mass(combined.train, [r.weight for r in combined.train], lambda r: r.label)
    labelled = [by_class[c] for c in (0, 1, 2)]
    assert max(labelled) == pytest.approx(min(labelled))


# ---------------------------------------------------------------------------- confusion


def test_confusion_by_dataset():
    records = make_records([("koniq10k", 0, 2), ("koniq10k", 1, 3), ("ava", 2, 2),
                            ("spaq", None, 1)])
    predicted = [0, 1, 1, 1, 2, "accepted", np.int64(1), 0]
    matrices = confusion_by_dataset(records, predicted)
    assert matrices == {
        "koniq10k": [[1, 1, 0], [0, 2, 1], [0, 0, 0]],
        "ava": [[0, 0, 0], [0, 0, 0], [0, 1, 1]],
    }
    with pytest.raises(ValueError, match="8 records but 7"):
        confusion_by_dataset(records, predicted[:7])
    with pytest.raises(ValueError, match="predicted label 3"):
        confusion_by_dataset(records[:1], [3])
