"""`iqs export`: ONNX + card from a checkpoint, parity with torch, and the same tensor for a file
in training and at run time."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from tests.helpers import make_photo  # noqa: E402
from iqs_cli.card import InputSpec, image_to_tensor, load_card  # noqa: E402
from iqs_cli.decode import load_rgb  # noqa: E402
from iqs_cli.fsutil import sha256_file  # noqa: E402
from iqs_training.checkpoint import save_weights_checkpoint  # noqa: E402
from iqs_training.data import RecordDataset, record_tensor  # noqa: E402
from iqs_training.datasets.base import Record  # noqa: E402
from iqs_training.evaluate import evaluate_model  # noqa: E402
from iqs_training.export import export_model  # noqa: E402
from iqs_training.model import IQSNet  # noqa: E402

ATTRIBUTES = ["blur", "noise", "underexposure", "overexposure", "compression", "color"]
SPEC = InputSpec(size=96, resize="squash")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    net = IQSNet("lite0", num_attributes=len(ATTRIBUTES), pretrained=True, multiscale=True)
    # Heads with some spread, so parity is checked on outputs that are not all ~0.
    with torch.no_grad():
        for head in (net.class_head, net.mos_head, net.attribute_head):
            head.weight.mul_(5)
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    return save_weights_checkpoint(net.eval(), path, SPEC, {"attributes": ATTRIBUTES},
                                   epoch=3, best={"metric": "mos.all.srcc", "value": 0.5, "epoch": 3})


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "iqs-test"
    metrics = {"clive": {"srcc": 0.61, "plcc": 0.64, "n_mos": 139}}
    return export_model(checkpoint, out, version="1.2.3", metrics=metrics)


def photos(shared_data) -> list:
    clive = sorted((shared_data / "clive" / "images").glob("*.jpg"))[:2]
    pristine = [shared_data / "pristine" / n for n in ("mate-LadyBird.jpg", "plasma-Volna.jpg")]
    return clive + pristine


def torch_outputs(checkpoint, batch: np.ndarray):
    from iqs_training.checkpoint import load_checkpoint

    net, _ = load_checkpoint(checkpoint)
    with torch.no_grad():
        out = net(torch.from_numpy(batch))
    return [out[k].numpy() for k in ("class_logits", "mos", "attributes")]


def test_onnx_matches_torch_on_real_photos(checkpoint, exported, shared_data):
    batch = np.stack([record_tensor(p, SPEC) for p in photos(shared_data)])
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    got = session.run(["class_logits", "mos", "attributes"], {"image": batch})
    expected = torch_outputs(checkpoint, batch)
    assert np.ptp(expected[1]) > 0.5  # the photos get different scores: a real comparison
    for name, g, e, tol in zip(("class_logits", "mos", "attributes"), got, expected, (1e-3, 1e-2, 1e-4)):
        assert g.shape == e.shape, name
        assert np.max(np.abs(g - e)) < tol, name


def test_batch_is_dynamic_and_the_fixed_input_graph_is_lean(exported):
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert session.get_inputs()[0].shape == ["N", 3, 96, 96]  # squash: one size, fixed
    assert [o.name for o in session.get_outputs()] == ["class_logits", "mos", "attributes",
                                                       "features"]
    card = json.loads(exported.with_suffix(".json").read_text())
    size = card["features"]["size"]
    assert card["features"] == {"output": "features", "size": size, "normalized": True}
    rng = np.random.default_rng(0)
    one = rng.uniform(-1, 1, (1, 3, 96, 96)).astype(np.float32)
    three = np.concatenate([one, rng.uniform(-1, 1, (2, 3, 96, 96)).astype(np.float32)])
    out1 = session.run(None, {"image": one})
    out3 = session.run(None, {"image": three})
    assert [o.shape for o in out1] == [(1, 3), (1,), (1, 6), (1, size)]
    assert [o.shape for o in out3] == [(3, 3), (3,), (3, 6), (3, size)]
    np.testing.assert_allclose(out1[1], out3[1][:1], atol=1e-3)
    graph = onnx.load(str(exported)).graph
    assert not [n for n in graph.node if n.op_type in ("Pad", "Shape")]  # folded, not computed
    assert card["model"]["graph"] == {"input_hw": [96, 96], "same_padding_folded_into_convs": 5}


def test_the_lean_graph_gives_the_dynamic_graph_s_outputs_exactly(checkpoint, tmp_path):
    from iqs_training.export import export_onnx
    from iqs_training.checkpoint import load_checkpoint

    net, _ = load_checkpoint(checkpoint)
    dynamic, lean = tmp_path / "dynamic.onnx", tmp_path / "lean.onnx"
    assert export_onnx(net, dynamic, 96) == 0
    assert export_onnx(net, lean, 96, fixed_size=True) == 5  # stem + four stride-2 convs
    x = np.random.default_rng(1).uniform(-1, 1, (4, 3, 96, 96)).astype(np.float32)
    outputs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"image": x})
               for p in (dynamic, lean)]
    for a, b in zip(*outputs):
        np.testing.assert_array_equal(a, b)
    # The dynamic graph still takes any size (a card with a short-side resize needs it).
    odd = x[:2, :, :95, :93].copy()
    session = ort.InferenceSession(str(dynamic), providers=["CPUExecutionProvider"])
    assert [o.shape for o in session.run(None, {"image": odd})][:3] == [(2, 3), (2,), (2, 6)]


def test_card_has_the_contract_fields(exported):
    card_path = exported.with_suffix(".json")
    data = json.loads(card_path.read_text())
    for key in ("name", "version", "input", "classes", "attributes", "reasons",
                "mos_range", "thresholds", "training", "metrics", "sha256", "license"):
        assert key in data, key
    assert data["name"] == "iqs-test" and data["version"] == "1.2.3"
    assert data["input"] == {"size": 96, "resize": "squash", "crop": "none", "mean": [0.5] * 3,
                             "std": [0.5] * 3, "layout": "NCHW", "color": "RGB"}
    assert data["classes"] == ["rejected", "pending", "accepted"]
    assert data["attributes"] == ATTRIBUTES
    # Every reason the model can give: token -> wording (iqs_cli/verdict.py's REASONS).
    assert data["reasons"] == {
        "blur": "blurry", "noise": "noisy", "underexposed": "underexposed",
        "overexposed": "overexposed", "compression": "heavy JPEG artifacts",
        "color": "poor color (cast or washed out)", "low_quality": "low overall quality",
    }
    assert "attribute_reasons" not in data
    assert data["thresholds"]["reason"] == 0.5 and len(data["thresholds"]["stars"]) == 4
    assert data["sha256"] == sha256_file(exported)
    assert {"data", "config", "date", "commit"} <= set(data["training"])
    assert data["metrics"]["clive"]["srcc"] == 0.61
    assert "Apache-2.0" in data["license"]
    card = load_card(exported)  # what `iqs score` reads
    assert card.input == SPEC and card.onnx_path == exported


def test_export_replaces_a_model_in_place(checkpoint, exported, tmp_path):
    import shutil

    copy = tmp_path / exported.name  # its own copy: the module's export stays as other tests see it
    for path in (exported, exported.with_suffix(".json")):
        shutil.copy(path, tmp_path / path.name)
    again = export_model(checkpoint, copy, version="1.2.4")  # .onnx path works as the stem
    assert again == copy
    assert load_card(copy).version == "1.2.4"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iqs-test.json", "iqs-test.onnx"]


def test_training_and_run_time_give_the_same_tensor(exported, shared_data, tmp_path):
    from iqs_cli.engine import ModelSession
    from iqs_cli.scoring import Scorer

    rotated = make_photo(tmp_path / "rotated.jpg", size=(120, 80), brightness=90, seed=3,
                         exif=_orientation_exif(6), quality=92)
    png = make_photo(tmp_path / "photo.png", size=(70, 50), brightness=160, seed=4)
    files = photos(shared_data)[:3] + [rotated, png]
    records = [Record(path=p, dataset="x", mos=50.0) for p in files]
    scorer = Scorer(ModelSession(load_card(exported)))  # what `iqs score` runs, card SPEC
    for spec in (SPEC, InputSpec(size=64, resize="short_side", crop="center")):
        evaluation = RecordDataset(records, spec, train=False)
        cached_view = RecordDataset(records, spec, train=True, augment={"hflip": True})
        for i, path in enumerate(files):
            run_time = image_to_tensor(load_rgb(path, spec.decode_min_side), spec)
            np.testing.assert_array_equal(evaluation[i]["image"].numpy(), run_time)
            np.testing.assert_array_equal(record_tensor(path, spec), run_time)
            if spec == SPEC:
                np.testing.assert_array_equal(scorer._decode_shot(str(path))[0], run_time)
            # View 0 of the feature cache is the run-time tensor too; view 1 its mirror image.
            np.testing.assert_array_equal(cached_view.image(i, view=0), run_time)
            np.testing.assert_array_equal(cached_view.image(i, view=1), run_time[:, :, ::-1])
        assert evaluation[3]["image"].shape == (3, spec.size, spec.size)
    assert evaluation[3]["image"].shape == (3, 64, 64)


def _orientation_exif(value: int) -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


def test_onnx_and_checkpoint_evaluate_alike(checkpoint, exported, shared_data):
    labels = {}
    for line in (shared_data / "clive" / "labels.csv").read_text().splitlines()[1:7]:
        name, mos, _ = line.split(",")
        labels[name] = float(mos)
    records = [Record(path=shared_data / "clive" / "images" / n, dataset="clive", mos=m,
                      label=0 if m < 35 else 1) for n, m in labels.items()]
    records.append(Record(path=shared_data / "clive" / "README.md", dataset="clive", mos=50.0))
    from_onnx = evaluate_model(exported, records)
    from_torch = evaluate_model(checkpoint, records[:-1])
    assert from_onnx["n"] == 6 and len(from_onnx["errors"]) == 1
    assert "README.md" in from_onnx["errors"][0]["path"]
    for key in ("srcc", "plcc", "rmse"):
        assert from_onnx["mos"]["clive"][key] == pytest.approx(from_torch["mos"]["clive"][key], abs=1e-3)
    assert from_onnx["class"]["clive"]["confusion"] == from_torch["class"]["clive"]["confusion"]
    assert from_onnx["confusion_by_dataset"]["clive"] == from_onnx["class"]["clive"]["confusion"]


def test_int8_keeps_the_early_layers_in_fp32_and_reports_its_fidelity(exported, tmp_path):
    from iqs_training.quantize import EARLY_FP32, calibration_tensors, fidelity, quantize

    photos = [make_photo(tmp_path / f"p{i}.jpg", size=(128, 96), brightness=30 + 40 * i, seed=i)
              for i in range(6)]
    small = tmp_path / "small.onnx"
    info = quantize(exported, small, calibration_tensors(exported, photos))
    assert info["precision"] == "int8" and info["calibration_photos"] == 6
    graph = onnx.load(str(small)).graph
    producer = {out: node for node in graph.node for out in node.output}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    quantized = [n.name for n in convs if producer.get(n.input[1]) is not None
                 and producer[n.input[1]].op_type == "DequantizeLinear"]
    assert quantized and all(not name.startswith(EARLY_FP32) for name in quantized)
    assert any(n.name.startswith(EARLY_FP32) for n in convs)  # the stem stays fp32
    card = json.loads(exported.with_suffix(".json").read_text())
    card["sha256"] = sha256_file(small)
    small.with_suffix(".json").write_text(json.dumps(card))
    report = fidelity(exported, small, photos, [10.0, 30, 50, 60, 70, 90], photos[:2])
    assert report["photos"] == 6 and report["sanity_photos"] == 2
    assert 0.0 <= report["labels_agree"] <= 1.0 and report["max_mos_change"] < 30
    assert set(report) >= {"srcc_fp32", "srcc_int8", "srcc_change", "holds"}
