"""Prove it: train -> export -> `iqs score` end to end on CPU with tiny data, and the tiny model
beats a constant predictor on its own validation set.

The data: the 20 pristine photos shrunk to 96x72, each saved sharp and at four levels of blur
plus darkening, with a MOS that falls with the level (a generic CSV, read through the combining
config like any dataset). A Lite0 with a frozen ImageNet backbone (multiscale pooled features,
cached once) learns the heads in seconds.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from iqs_cli.card import load_card  # noqa: E402
from iqs_cli.fsutil import sha256_file  # noqa: E402
from iqs_training import commands  # noqa: E402
from iqs_training.metrics import rmse, srcc  # noqa: E402

LEVELS = (0, 1, 2, 3, 4)
# 100 photos are far fewer than a real run wants (iqs train warns); enough to prove the pipeline.
pytestmark = pytest.mark.filterwarnings("ignore::iqs_training.datasets.base.DataWarning")


def level_mos(level: int) -> float:
    return 80.0 - 15.0 * level


def make_tiny_dataset(shared_data, folder):
    from PIL import Image, ImageEnhance, ImageFilter

    folder.mkdir(parents=True)
    rows = ["path,mos"]
    for i, source in enumerate(sorted((shared_data / "pristine").glob("*.jpg"))):
        with Image.open(source) as image:
            image.draft("RGB", (192, 144))
            small = image.convert("RGB").resize((96, 72), Image.LANCZOS)
        for level in LEVELS:
            out = small.filter(ImageFilter.GaussianBlur(level)) if level else small
            out = ImageEnhance.Brightness(out).enhance(1 - 0.15 * level)
            name = f"p{i:02d}_l{level}.jpg"
            out.save(folder / name, quality=90)
            rows.append(f"{name},{level_mos(level)}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")


TRAIN = {
    "seed": 0,
    "input": {"size": 64, "resize": "squash"},
    # Frozen backbone: only the feature norm and the heads train, on cached pooled features.
    "model": {"trainable_blocks": 0, "train_conv_head": False, "multiscale": True},
    "epochs": 12,
    "batch_size": 8,
    "lr": 3e-4,
    "warmup_epochs": 0.5,
    "ema_decay": 0.9,
    "num_workers": 0,
    "feature_cache": {"enabled": True, "views": 2},
    "loss": {"plcc_weight": 0.5},
}


@pytest.fixture(scope="module")
def tiny(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    make_tiny_dataset(shared_data, root / "tiny")
    config = {
        "name": "tiny",
        "datasets": [{"name": "tiny", "reader": "csv", "root": "tiny", "kind": "ordinary",
                      "split": {"seed": 0, "val": 0.3}}],
        "sampling": {"balance_classes": False},
        "train": TRAIN,
    }
    (root / "config.json").write_text(json.dumps(config))
    return root


def test_train_export_score_end_to_end(tiny):
    config, run = tiny / "config.json", tiny / "run"
    # Stopped after half the epochs, then --resume: the same result as one uninterrupted run.
    commands.train(config, tiny, run, stop_after=TRAIN["epochs"] // 2, progress=False)
    # The rest through the command line, as a user runs it.
    from typer.testing import CliRunner

    from iqs_cli.cli import app

    runner = CliRunner()
    resumed = runner.invoke(app, ["train", "--config", str(config), "--data-root", str(tiny),
                                  "--out", str(run), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    best_checkpoint, last_checkpoint = run / "best.pt", run / "last.pt"
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in log] == list(range(1, TRAIN["epochs"] + 1))
    assert log[-1]["train"]["loss"] < log[0]["train"]["loss"]
    assert best_checkpoint.exists() and (run / "config.json").exists()
    uninterrupted = commands.train(config, tiny, tiny / "run-once", progress=False)
    resumed_weights = torch.load(last_checkpoint, weights_only=False)["weights"]
    once_weights = torch.load(uninterrupted.last_checkpoint, weights_only=False)["weights"]
    for key, value in once_weights.items():
        assert torch.equal(value, resumed_weights[key]), key

    exported = runner.invoke(app, ["export", str(best_checkpoint), "--out", str(tiny / "model" / "tiny-iqs"),
                                   "--version", "0.0.1", "--config", str(config), "--data-root", str(tiny),
                                   "--split", "val"])
    assert exported.exit_code == 0, exported.output
    onnx_path = tiny / "model" / "tiny-iqs.onnx"
    card = load_card(onnx_path)
    assert card.sha256 == sha256_file(onnx_path)
    assert card.metrics["tiny"]["n_mos"] == 30 and card.metrics["split"] == "val"

    data = commands._load_data(json.loads(config.read_text()), tiny)
    val = {r.path.name: r.mos for r in data.val}
    train_mean = float(np.mean([r.mos for r in data.train]))

    if importlib.util.find_spec("iqs_cli.cli") is None:
        pytest.skip("iqs_cli.cli (the `iqs score` command) does not exist yet")
    scored = subprocess.run(
        [sys.executable, "-m", "iqs_cli", "score", "--model", str(onnx_path), "--format", "jsonl",
         "--no-cache", "--quiet", str(tiny / "tiny")],
        capture_output=True, text=True, timeout=120,
    )
    assert scored.returncode == 0, scored.stderr
    results = [json.loads(line) for line in scored.stdout.splitlines() if line.strip()]
    assert len(results) == 100 and all(r["error"] is None for r in results)
    predicted = {r["path"].rsplit("/", 1)[-1]: r["mos"] for r in results}
    names = sorted(val)
    truth = np.array([val[n] for n in names])
    pred = np.array([predicted[n] for n in names])
    constant = np.full_like(truth, train_mean)
    # Beats the constant predictor (the training mean): it ranks, and it errs less.
    assert srcc(pred, truth) > 0.6
    assert rmse(pred, truth) < 0.8 * rmse(constant, truth)
    # `iqs score` reports what `iqs eval` measured on the same files.
    assert srcc(pred, truth) == pytest.approx(card.metrics["tiny"]["srcc"], abs=1e-3)


@pytest.fixture(scope="module")
def finished_run(tiny):
    """A finished tiny run of its own (tests need not run after the end-to-end one)."""
    run = tiny / "finished-run"
    commands.train(tiny / "config.json", tiny, run, progress=False)
    return run


def test_evaluate_command_writes_a_json_report(tiny, finished_run, tmp_path):
    run = finished_run
    out = tmp_path / "report.json"
    report = commands.evaluate(run / "best.pt", tiny / "config.json", tiny, split="val", out=out)
    saved = json.loads(out.read_text())
    assert saved["mos"]["tiny"]["n"] == 30 and saved["split"] == "val"
    assert set(saved["mos"]["all"]) >= {"srcc", "plcc", "krcc", "rmse"}
    assert report["mos"]["all"]["srcc"] == pytest.approx(saved["mos"]["all"]["srcc"])
    with pytest.raises(commands.CommandError, match="empty"):
        commands.evaluate(run / "best.pt", tiny / "config.json", tiny, split="test")


def test_resume_refuses_a_changed_config_and_a_fresh_run_refuses_an_old_folder(tiny, finished_run,
                                                                            tmp_path):
    run = finished_run
    with pytest.raises(commands.CommandError, match="--resume"):
        commands.train(tiny / "config.json", tiny, run, progress=False)
    changed = json.loads((tiny / "config.json").read_text())
    changed["train"]["lr"] = 1e-3
    (tmp_path / "changed.json").write_text(json.dumps(changed))
    with pytest.raises(commands.CommandError, match="different `train` config"):
        commands.train(tmp_path / "changed.json", tiny, run, resume=True, progress=False)


# -- the pieces the loop is made of ---------------------------------------------------------------


def test_loss_uses_only_the_targets_a_sample_has():
    from iqs_training.losses import LossConfig, MultiTaskLoss

    criterion = MultiTaskLoss(LossConfig.from_dict({"plcc_weight": 1.0, "rank_weight": 1.0}))
    logits = torch.zeros(4, 3, requires_grad=True)
    mos_logit = torch.zeros(4, requires_grad=True)
    attr_logits = torch.zeros(4, 2, requires_grad=True)
    outputs = {"class_logits": logits, "mos": 100 * torch.sigmoid(mos_logit),
               "attribute_logits": attr_logits}
    nan = float("nan")
    batch = {
        "label": torch.tensor([2, -1, -1, 0]),
        "mos": torch.tensor([nan, 80.0, 20.0, 50.0]),
        "attributes": torch.tensor([[nan, nan], [0.5, nan], [nan, nan], [nan, 1.0]]),
    }
    total, parts = criterion(outputs, batch)
    assert set(parts) == {"class", "mos", "plcc", "rank", "attributes"}
    total.backward()
    assert logits.grad[1:3].abs().sum() == 0 and logits.grad[[0, 3]].abs().sum() > 0
    assert mos_logit.grad[0] == 0 and mos_logit.grad[1:].abs().sum() > 0
    assert attr_logits.grad[0].abs().sum() == 0 and attr_logits.grad[1, 1] == 0
    nothing = {"label": torch.full((4,), -1), "mos": torch.full((4,), nan),
               "attributes": torch.full((4, 2), nan)}
    total, parts = criterion(outputs, nothing)
    assert parts == {} and float(total.detach()) == 0.0 and total.requires_grad


def test_emd_knows_the_classes_are_ordered():
    from iqs_training.losses import emd_loss

    accepted = torch.tensor([2])
    says_pending = torch.tensor([[0.0, 5.0, 0.0]])
    says_rejected = torch.tensor([[5.0, 0.0, 0.0]])
    assert emd_loss(says_pending, accepted) < emd_loss(says_rejected, accepted)
    assert float(emd_loss(torch.tensor([[0.0, 0.0, 9.0]]), accepted)) < 0.01


def test_synthetic_rank_loss_wants_milder_levels_higher():
    from iqs_training.losses import synthetic_rank_loss

    reference = torch.tensor([7, 7, 7, 8, -1])
    distortion = torch.tensor([3, 3, 3, 3, -1])
    level = torch.tensor([0, 2, 4, 1, -1])
    right = torch.tensor([85.0, 60.0, 30.0, 10.0, 99.0])
    wrong = torch.tensor([30.0, 60.0, 85.0, 10.0, 99.0])
    assert float(synthetic_rank_loss(right, reference, distortion, level, margin=2.0)) == 0.0
    assert float(synthetic_rank_loss(wrong, reference, distortion, level, margin=2.0)) > 20.0
    lonely = torch.tensor([7, 8, 9, -1, -1])  # no two samples of one reference: no pairs
    assert synthetic_rank_loss(right, lonely, distortion, level, margin=2.0) is None


def test_synthetic_ladders_train_through_the_feature_cache(shared_data, tmp_path):
    from iqs_training.datasets.base import Record
    from iqs_training.train import train_model

    val = [Record(path=p, dataset="pristine", mos=85.0)
           for p in sorted((shared_data / "pristine").glob("*.jpg"))[:3]]
    cfg = dict(TRAIN, epochs=2, batch_size=4, loss={"synthetic_rank_weight": 1.0})
    cfg["synthetic"] = {"enabled": True, "references": ["pristine/mate-*.jpg"], "ladder_levels": 2,
                        "batch_groups": 2, "cached_groups": 4}
    result = train_model(cfg, [], val, tmp_path / "run", data_root=shared_data, progress=False)
    assert [e["epoch"] for e in result.history] == [1, 2]
    assert "synthetic_rank" in result.history[0]["train"] and "attributes" in result.history[0]["train"]
    state = torch.load(result.best_checkpoint, map_location="cpu", weights_only=False)
    assert state["attributes"] == ["blur", "noise", "underexposure", "overexposure", "compression", "color"]
    assert state["data_summary"]["synthetic_references"] == 12
