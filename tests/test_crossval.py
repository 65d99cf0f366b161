"""Cross-validation of a run's head fits (training/crossval.py) on a fake run folder.

The run: a tiny frozen-backbone IQSNet (no ImageNet weights) in best.pt and feature caches as
training writes them (train: 2 views per photo, val: 1 view, synthetic ladders whose sources
include some training photos), with random low-rank features where MOS is a linear function of
the features plus noise. Held-out folds must then rank well, and not at all once the MOS is
shuffled across photos.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from iqs_cli.card import InputSpec  # noqa: E402
from iqs_training import crossval  # noqa: E402
from iqs_training.checkpoint import save_weights_checkpoint  # noqa: E402
from iqs_training.config import merge_config  # noqa: E402
from iqs_training.train import model_from_config  # noqa: E402

CONFIG = {
    "seed": 0,
    "model": {"pretrained": False, "trainable_blocks": 0, "train_conv_head": False, "mos_span": [-50, 150]},
    "attributes": ["blur", "noise"],
    "input": {"size": 64},
    "synthetic": {"enabled": True, "ladder_levels": 3, "include_reference": True, "use_mos": False},
    "head_fit": {"enabled": True, "folds": 3, "mos_lambdas": [30.0, 300.0, 3000.0],
                 "class_lambdas": [0.3], "class_levels": [0, 4, 5], "max_false_reject": 0.05},
}
LATENT = 8


def class_of(mos: np.ndarray) -> np.ndarray:
    """iqs-base's CLIVE class rules (-1: MOS only)."""
    return np.select([mos < 35, mos < 42, mos < 70, mos < 75], [0, -1, 1, -1], 2).astype(np.int64)


def write_cache(folder, key: dict, pooled: np.ndarray, targets: dict) -> None:
    folder.mkdir(parents=True)
    np.save(folder / "pooled.npy", pooled.astype(np.float32))
    torch.save({k: torch.as_tensor(v) for k, v in targets.items()}, folder / "targets.pt")
    (folder / "done.json").write_text(json.dumps({"key": key, "items": len(pooled)}, default=str))


def make_run(folder, shuffle: bool = False, n_train: int = 90, n_val: int = 30, seed: int = 0,
             checkpoint=None):
    """Fake finished run: best.pt (a copy of `checkpoint` when given) + train / val / synthetic
    caches."""
    rng = np.random.default_rng(seed)
    cfg = merge_config(CONFIG)
    if checkpoint is None:
        model = model_from_config(cfg).eval()
        save_weights_checkpoint(model, folder / "best.pt", InputSpec(size=64), CONFIG, head_fit={})
    else:
        shutil.copy(checkpoint, folder / "best.pt")
    dim = 1280  # Lite0's pooled head features (no multiscale taps)
    mixing = rng.standard_normal((LATENT, dim)) / np.sqrt(LATENT)
    beta = np.zeros(LATENT)
    beta[:3] = [1.0, -0.6, 0.4]
    beta /= np.linalg.norm(beta)

    def features(latent):
        return latent @ mixing + 0.3 * rng.standard_normal((len(latent), dim))

    n = n_train + n_val
    latent = rng.standard_normal((n, LATENT))
    mos = np.clip(50 + 18 * latent @ beta + rng.normal(0, 3, n), 1, 99)
    if shuffle:
        mos = rng.permutation(mos)
    labels = class_of(mos)
    paths = [f"clive/{i:03d}.jpg" for i in range(n)]
    base = {"model": {k: v for k, v in cfg["model"].items() if k != "mos_span"}, "seed": None,
            "input": cfg["input"], "attributes": cfg["attributes"], "datasets": ["clive", "synthetic"]}
    cache = folder / "feature_cache"

    def record_targets(index, views):
        index = np.tile(index, views)
        m = len(index)
        return {"mos": mos[index].astype(np.float32), "label": labels[index],
                "attributes": np.full((m, 2), np.nan, np.float32), "dataset": np.zeros(m, np.int64),
                "level": np.full(m, -1), "source": np.full(m, -1)}

    train, val = np.arange(n_train), np.arange(n_train, n)
    view0 = features(latent[train])
    view1 = view0 + 0.1 * rng.standard_normal(view0.shape)  # the mirror image: nearly the same
    write_cache(cache / "a1", {**base, "what": "train", "views": 2,
                               "records": [(paths[i], mos[i], int(labels[i]), []) for i in train]},
                np.concatenate([view0, view1]), record_targets(train, 2))
    write_cache(cache / "b2", {**base, "what": "val", "records": [paths[i] for i in val]},
                features(latent[val]), record_targets(val, 1))

    # Synthetic ladders (reference + 3 levels) of 2 pristine photos and the 6 best training photos.
    references = ["pristine/a.jpg", "pristine/b.jpg"] + [paths[i] for i in np.argsort(-mos[train])[:6]]
    groups, levels = 40, []
    source = np.repeat(rng.integers(0, len(references), groups), 4)
    for _ in range(groups):
        levels += [0, *sorted(rng.choice([1, 2, 3, 4, 5], 3, replace=False))]
    levels = np.array(levels)
    syn_latent = rng.standard_normal((len(levels), LATENT))
    syn_latent += np.outer(1.8 - 0.8 * levels - syn_latent @ beta, beta)  # quality falls with level
    syn_labels = np.select([levels == 0, levels >= 4], [2, 0], 1)
    m = len(levels)
    write_cache(cache / "c3", {**base, "what": "synthetic", "synthetic": cfg["synthetic"],
                               "synthetic_seed": 0, "references": references},
                features(syn_latent),
                {"mos": np.full(m, np.nan, np.float32), "label": syn_labels,
                 "attributes": rng.random((m, 2)).astype(np.float32),
                 "dataset": np.ones(m, np.int64), "level": levels, "source": source})
    (cache / "d4.partial").mkdir()  # an unfinished cache is ignored
    return {"references": references, "source": source, "paths": paths}


@pytest.fixture(scope="module")
def fake_runs(tmp_path_factory):
    torch.set_num_threads(1)
    runs, checkpoint = {}, None
    for name, shuffle in (("real", False), ("shuffled", True)):
        folder = tmp_path_factory.mktemp(name)
        info = make_run(folder, shuffle=shuffle, checkpoint=checkpoint)
        checkpoint = folder / "best.pt"
        out = folder / "report.json"
        assert crossval.main(["--run", str(folder), "--folds", "3", "--repeats", "1",
                              "--out", str(out), "--quiet"]) == 0
        runs[name] = (json.loads(out.read_text()), info)
    return runs


def test_held_out_folds_rank_by_mos(fake_runs):
    report, _ = fake_runs["real"]
    assert report["photos"] == 120 and report["photos_from"] == {"train": 90, "val": 30}
    assert report["folds"] == 3 and report["repeats"] == 1 and len(report["per_fold"]) == 3
    assert sum(row["n"] for row in report["per_fold"]) == 120  # every photo held out once
    summary = report["summary"]
    assert summary["mos_srcc"]["min"] > 0.8
    assert summary["mos_plcc"]["mean"] > 0.8
    assert set(summary["mos_srcc"]) == {"mean", "std", "min", "max"}
    assert report["pooled_out_of_fold"][0]["mos_srcc"] > 0.8
    assert summary["class_accuracy"]["mean"] > 0.6
    assert summary["worst_fifth_rejected"]["mean"] > summary["best_fifth_rejected"]["mean"]
    assert summary["label_srcc_with_mos"]["mean"] > 0.5
    assert all(row["reject_at"] is not None for row in report["per_fold"])
    assert report["seconds"] >= 0


def test_shuffled_mos_gives_no_ranking(fake_runs):
    report, _ = fake_runs["shuffled"]
    assert abs(report["summary"]["mos_srcc"]["mean"]) < 0.25
    assert abs(report["pooled_out_of_fold"][0]["mos_srcc"]) < 0.25


def test_synthetic_crops_of_held_out_photos_are_left_out(fake_runs):
    report, info = fake_runs["real"]
    photo_refs = [r for r in info["references"] if r.startswith("clive/")]
    from_photos = int(np.isin(np.array(info["references"])[info["source"]], photo_refs).sum())
    assert from_photos > 0
    # Each photo is held out once per repeat: its crops are left out of exactly one fold's fit.
    assert sum(row["synthetic_rows_left_out"] for row in report["per_fold"]) == from_photos
    assert report["synthetic_rows"] == len(info["source"])


def test_fits_in_the_row_space_are_the_fits_in_feature_space(fake_runs, monkeypatch):
    report, _ = fake_runs["real"]
    monkeypatch.setattr(crossval, "row_space", lambda z: (z, None))
    plain = crossval.crossval(report["run"], folds=3, repeats=1, progress=False)
    for a, b in zip(report["per_fold"], plain["per_fold"]):
        assert a["mos_lambda"] == b["mos_lambda"] and a["class_lambda"] == b["class_lambda"]
        assert a["reject_at"] == b["reject_at"]
        for name in ("mos_srcc", "mos_plcc", "mos_rmse", "class_accuracy", "label_srcc_with_mos"):
            assert a[name] == pytest.approx(b[name], abs=2e-3), name


def test_stratified_folds_spread_the_mos_range():
    mos = np.arange(100.0)
    fold = crossval.assign_folds(mos, 5, seed=[0, 0])
    assert np.bincount(fold).tolist() == [20] * 5
    for f in range(5):  # one photo of each run of five in MOS order
        assert np.all(np.diff(np.sort(mos[fold == f])) < 10)
    assert not np.array_equal(fold, crossval.assign_folds(mos, 5, seed=[0, 1]))


def test_a_run_without_caches_is_refused(tmp_path, capsys):
    model = model_from_config(merge_config(CONFIG))
    save_weights_checkpoint(model, tmp_path / "best.pt", InputSpec(size=64), CONFIG)
    assert crossval.main(["--run", str(tmp_path)]) == 2
    assert "no finished train or val cache" in capsys.readouterr().err
