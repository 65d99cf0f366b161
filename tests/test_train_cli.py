"""`iqs train` and `iqs export` as a new user meets them: the installed package's names, the
export command that training prints, warnings about too little data, heads without labels, and
a training log that a file can hold. Tiny data (generated photos) and a tiny frozen model: CPU
only, seconds each."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tests.helpers import make_photo  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from iqs_cli.cli import app  # noqa: E402
from iqs_training import commands  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# Tiny data earns warnings about too little data: asserted where they matter, quiet elsewhere.
QUIET = pytest.mark.filterwarnings("ignore::iqs_training.datasets.base.DataWarning")

# A frozen backbone without ImageNet weights at 32 px: the pooled features are cached once and
# only the heads train, so an epoch takes a moment. The plumbing is what is tested here.
TINY_TRAIN = {
    "seed": 0,
    "input": {"size": 32, "resize": "squash"},
    "model": {"pretrained": False, "trainable_blocks": 0, "train_conv_head": False},
    "epochs": 3,
    "batch_size": 8,
    "num_workers": 0,
    "feature_cache": {"enabled": True, "views": 1},
}


def make_rated_folder(root: Path, count: int = 40, label: bool = False,
                      name: str = "photos") -> Path:
    """`root/NAME/` with `count` small photos and labels.csv (path,mos[,label]): brighter is
    rated higher; with `label`, the middle photo is labelled accepted whatever its MOS."""
    folder = root / name
    rows = ["path,mos,label" if label else "path,mos"]
    for i in range(count):
        file = f"p{i:03d}.jpg"
        make_photo(folder / file, size=(48, 32), brightness=40 + 4 * i, seed=i)
        row = f"{file},{10 + 80 * i / max(1, count - 1):.1f}"
        rows.append(row + ((",accepted" if i == count // 2 else ",") if label else ""))
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def write_config(root: Path, split: dict, train: dict | None = None) -> Path:
    config = {
        "name": "tiny-user",
        "datasets": [{"name": "photos", "reader": "csv", "root": "photos", "kind": "ordinary",
                      "split": {"seed": 0, **split}}],
        "sampling": {"balance_classes": False},
        "train": {**TINY_TRAIN, **(train or {})},
    }
    path = root / "config.json"
    path.write_text(json.dumps(config))
    return path


# -- 6b: the installed package has no top-level `training` ------------------------------------


def test_the_package_installs_no_top_level_training_module(tmp_path):
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = {name.split(".")[0] for name in setuptools["packages"]}
    assert "training" not in declared and "iqs_training" in declared
    assert setuptools["package-dir"]["iqs_training"] == "training"

    try:
        dist = importlib.metadata.distribution("iqs")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("iqs is not installed (pip install -e '.[train,test]')")
    top_level = (dist.read_text("top_level.txt") or "").split()
    if not top_level:  # no top_level.txt: the first part of every installed file
        top_level = sorted({Path(str(f)).parts[0] for f in dist.files or ()})
    assert "training" not in top_level, (
        f"the installed iqs puts a top-level 'training' in site-packages ({top_level}); "
        "reinstall: pip install -e '.[train,test]'")

    # Outside the checkout (so not from the current folder), only the iqs_ name imports.
    probe = ("import importlib.util as u; "
             "print(u.find_spec('training') is None, u.find_spec('iqs_training.commands') is not None)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["True", "True"], out.stderr


def test_nothing_in_training_imports_itself_by_the_top_level_name():
    # Relative imports inside training/ work under the installed name iqs_training.
    for path in sorted((REPO / "training").rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.strip()
            assert not stripped.startswith(("from training", "import training")), \
                f"{path.relative_to(REPO)}:{number}: {stripped}"


# -- 7: the export command that `iqs train` prints works as printed ---------------------------


def test_the_printed_export_command_works_when_the_config_has_no_test_split(tmp_path, monkeypatch):
    make_rated_folder(tmp_path)
    write_config(tmp_path, {"val": 0.25, "test": 0.0})
    monkeypatch.chdir(tmp_path)  # relative paths, as a user types them
    runner = CliRunner()
    trained = runner.invoke(app, ["train", "--config", "config.json", "--data-root", ".",
                                  "--out", "runs/mine"])
    assert trained.exit_code == 0, trained.output
    hint = next(line for line in trained.stdout.splitlines() if line.startswith("export it with: "))
    words = shlex.split(hint.removeprefix("export it with: "))
    assert words[:2] == ["iqs", "export"] and "--split" in words and "val" in words

    exported = runner.invoke(app, words[1:])
    assert exported.exit_code == 0, exported.output
    card = json.loads(Path("runs/mine/mine.json").read_text())
    assert Path("runs/mine/mine.onnx").exists()
    assert card["name"] == "mine" and card["metrics"]["split"] == "val"
    assert card["metrics"]["photos"]["n_mos"] == 10
    # ... and the model it names scores photos.
    scored_hint = next(line for line in trained.stdout.splitlines()
                       if line.startswith("then score with: "))
    model = shlex.split(scored_hint)[-1]
    scored = runner.invoke(app, ["score", "photos", "--model", model, "--format", "jsonl",
                                 "--no-cache", "--quiet"])
    assert scored.exit_code == 0, scored.output
    assert len([line for line in scored.stdout.splitlines() if line.startswith("{")]) == 40


def test_the_hint_leaves_out_metrics_when_nothing_is_held_out():
    hint, model, note = commands.export_hint(Path("runs/x/best.pt"), Path("c.json"), Path("."),
                                             {"train": 40, "val": 0, "test": 0})
    assert hint == "iqs export runs/x/best.pt --out runs/x/x" and "no metrics" in note
    assert model == Path("runs/x/x.onnx")
    hint, _, note = commands.export_hint(Path("my runs/best.pt"), Path("c.json"), Path("d"),
                                         {"train": 40, "val": 5, "test": 5})
    assert shlex.split(hint)[-2:] == ["--split", "test"] and note is None
    assert "'my runs/best.pt'" in hint  # quoted: it pastes as one word


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("small-run")
    make_rated_folder(root)
    config = write_config(root, {"val": 0.25, "test": 0.0}, {"epochs": 1})
    commands.train(config, root, root / "run", progress=False)
    return root


@QUIET
def test_a_failed_export_leaves_no_model_and_no_card(small_run, monkeypatch):
    out = small_run / "models" / "mine"
    runner = CliRunner()
    # The config has no 'test' photos: said at once, with what to do, and nothing written.
    failed = runner.invoke(app, ["export", str(small_run / "run" / "best.pt"), "--out", str(out),
                                 "--config", str(small_run / "config.json"),
                                 "--data-root", str(small_run)])
    assert failed.exit_code == 2
    assert "'test' split is empty" in failed.stderr and "--split val" in failed.stderr
    assert not out.with_suffix(".onnx").exists() and not out.with_suffix(".json").exists()

    # A failure after the model was made (here: the evaluation) leaves nothing either, not
    # even the temporary files.
    def broken(*args, **kwargs):
        raise commands.CommandError("evaluation failed")

    monkeypatch.setattr(commands, "evaluate", broken)
    with pytest.raises(commands.CommandError, match="evaluation failed"):
        commands.export(small_run / "run" / "best.pt", out, config=small_run / "config.json",
                        data_root=small_run, split="val")
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


@QUIET
def test_a_failed_export_keeps_the_previous_export(small_run, monkeypatch):
    out = small_run / "models-again" / "mine"
    commands.export(small_run / "run" / "best.pt", out)
    before = {p.name: p.read_bytes() for p in out.parent.iterdir()}
    assert sorted(before) == ["mine.json", "mine.onnx"]

    def broken(*args, **kwargs):
        raise commands.CommandError("evaluation failed")

    monkeypatch.setattr(commands, "evaluate", broken)
    with pytest.raises(commands.CommandError):
        commands.export(small_run / "run" / "best.pt", out, config=small_run / "config.json",
                        data_root=small_run, split="val")
    assert {p.name: p.read_bytes() for p in out.parent.iterdir()} == before


# -- 8: too little data is said; heads without labels are not exported -------------------------


def test_too_little_data_is_said_with_the_numbers(tmp_path):
    make_rated_folder(tmp_path)
    config = write_config(tmp_path, {"val": 0.25, "test": 0.0}, {"epochs": 1})
    result = CliRunner().invoke(app, ["train", "--config", str(config), "--data-root",
                                      str(tmp_path), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert ("warning: only 30 labelled photos for training (at least 200 recommended"
            in result.stderr)
    assert "warning: only 10 labelled photos in the 'val' split (at least 30 recommended" \
        in result.stderr
    assert "'test'" not in result.stderr  # an empty split is a choice, not too little data
    assert "2 warnings about the data above" in result.stderr


def test_enough_data_is_not_warned_about():
    assert commands.data_warnings({"train": 200, "val": 30, "test": 0}, "c.json") == []
    assert len(commands.data_warnings({"train": 199, "val": 29, "test": 29}, "c.json")) == 3


@QUIET
def test_attribute_heads_without_labels_are_not_trained_or_exported(tmp_path):
    import onnx

    make_rated_folder(tmp_path)
    config = write_config(tmp_path, {"val": 0.25, "test": 0.0},
                          {"epochs": 1, "attributes": ["blur", "noise"]})
    with pytest.warns(commands.DataWarning, match="blur, noise"):
        result = commands.train(config, tmp_path, tmp_path / "run", progress=False)
    onnx_path = commands.export(result.best_checkpoint, tmp_path / "model" / "mine")
    card = json.loads(onnx_path.with_suffix(".json").read_text())
    assert card["attributes"] == []
    assert set(card["reasons"]) == {"low_quality"}  # no reason it never learned
    outputs = [o.name for o in onnx.load(str(onnx_path)).graph.output]
    assert outputs == ["class_logits", "mos", "features"]


@QUIET
def test_a_partly_labelled_attribute_set_keeps_only_the_labelled_heads(tmp_path):
    import onnx

    from iqs_training.datasets.base import DataWarning, Record
    from iqs_training.export import export_model
    from iqs_training.train import train_model

    records = []
    for i in range(12):
        path = make_photo(tmp_path / f"p{i}.jpg", size=(48, 32), brightness=40 + 15 * i, seed=i)
        records.append(Record(path=path, dataset="mine", mos=10.0 + 7 * i, label=i % 3,
                              attributes={"blur": i / 11} if i % 2 else {}))
    cfg = {**TINY_TRAIN, "epochs": 1, "attributes": ["blur", "noise"]}
    with pytest.warns(DataWarning, match="attribute\\(s\\) noise"):
        result = train_model(cfg, records[:8], records[8:], tmp_path / "run", progress=False)
    onnx_path = export_model(result.best_checkpoint, tmp_path / "mine")
    card = json.loads(onnx_path.with_suffix(".json").read_text())
    assert card["attributes"] == ["blur"] and "noise" not in card["reasons"]
    graph = onnx.load(str(onnx_path)).graph
    attributes = next(o for o in graph.output if o.name == "attributes")
    assert attributes.type.tensor_type.shape.dim[1].dim_value == 1


# -- 9: a training log in a file ------------------------------------------------------------------


def test_training_written_to_a_file_is_one_line_per_epoch(tmp_path):
    make_rated_folder(tmp_path)
    config = write_config(tmp_path, {"val": 0.25, "test": 0.0})
    log = tmp_path / "train.log"
    with open(log, "wb") as out:  # stdout and stderr into one file, as `> log 2>&1` does
        done = subprocess.run(
            [sys.executable, "-m", "iqs_cli", "train", "--config", str(config),
             "--data-root", str(tmp_path), "--out", str(tmp_path / "run")],
            stdout=out, stderr=subprocess.STDOUT, timeout=300)
    text = log.read_text(encoding="utf-8")
    assert done.returncode == 0, text
    assert "\r" not in text
    epochs = TINY_TRAIN["epochs"]
    for epoch in range(1, epochs + 1):
        assert len([line for line in text.splitlines()
                    if line.startswith(f"epoch {epoch}/{epochs}")]) == 1, text
    assert len([line for line in text.splitlines() if line.startswith("epoch ")]) == epochs


# -- 7b: the README's config for your own rated photos ------------------------------------------


def test_the_my_photos_config_reads_a_path_mos_label_csv(tmp_path):
    from iqs_training.datasets.combine import load_combined
    from iqs_training.config import merge_config

    make_rated_folder(tmp_path, count=60, label=True, name="my-photos")
    config = json.loads((REPO / "training" / "configs" / "my-photos.json").read_text())
    data = load_combined(config, tmp_path)
    records = data.train + data.val + data.test
    assert len(records) == 60 and data.val and data.test  # held out to measure the model
    middle = next(r for r in records if r.path.name == "p030.jpg")
    assert middle.label == 2 and 45 < middle.mos < 55  # the label column wins over the rules
    assert {r.label for r in records} == {0, 1, 2, None}
    assert merge_config(config["train"])["synthetic"]["references_from_records"]["min_mos"] == 75
