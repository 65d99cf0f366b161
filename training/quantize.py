"""int8 for the CPU: static QDQ quantization of an exported (lean) model, and the check that
decides whether it may ship.

Weights per channel (int8), activations uint8 (ONNX Runtime's U8S8 kernels), ranges from
MinMax calibration on training photos preprocessed exactly as at run time (decode.load_rgb +
card.image_to_tensor). Only convolutions are quantized, and not the first ones: the stem and
blocks 0-1 (EARLY_FP32) see raw pixels and fine texture, where 8 bits cost the most labels;
the heads stay fp32. Measured on iqs-base (issue 13): everything int8 flipped 2.7 % of labels
near reject_at; keeping the early layers fp32 kept 99.3 % at nearly the same speed.

`fidelity` compares the int8 model with its fp32 source on photos neither trained on: SRCC with
the human MOS of each, the labels they agree on, and a sanity set (whole pristine photos and
their severe distortions) whose labels must not change.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from iqs_cli.card import image_to_tensor, load_card, read_card, write_card
from iqs_cli.decode import load_rgb
from iqs_cli.engine import ModelSession
from iqs_cli.fsutil import sha256_file, write_atomic
from iqs_cli.vocabulary import ONNX_INPUT
from . import commands
from .metrics import srcc
from .model_report import decided_labels, model_outputs, score_paths

# Node-name prefixes kept in fp32 ("early2": the stem and the first two blocks).
EARLY_FP32 = ("/net/_conv_stem", "/net/_blocks.0/", "/net/_blocks.1/")
# What an int8 model must keep of its fp32 source to be shipped by default.
MAX_SRCC_DROP = 0.005
MIN_LABEL_AGREEMENT = 0.99


def calibration_tensors(model: Path, photos: list[Path]) -> list[np.ndarray]:
    card = load_card(model)
    return [image_to_tensor(load_rgb(p, card.input.decode_min_side), card.input) for p in photos]


def quantize(fp32: Path, out: Path, tensors: list[np.ndarray],
             keep_fp32: tuple[str, ...] = EARLY_FP32) -> dict:
    """Write the int8 model of `fp32` to `out`; returns what the card records about it."""
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat,
                                          QuantType, quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._batches = iter(tensors)

        def get_next(self):
            tensor = next(self._batches, None)
            return None if tensor is None else {ONNX_INPUT: tensor[None]}

    with tempfile.TemporaryDirectory(prefix="iqs-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        names = [node.name for node in onnx.load(str(prepared)).graph.node]
        excluded = [n for n in names if n.startswith(keep_fp32)]
        quantize_static(str(prepared), str(out), Reader(), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        op_types_to_quantize=["Conv"], nodes_to_exclude=excluded)
    return {"precision": "int8", "scheme": "static QDQ, per-channel int8 weights, uint8 "
            "activations (U8S8), MinMax calibration, convolutions only",
            "kept_fp32": list(keep_fp32) + ["heads"], "calibration_photos": len(tensors)}


def fidelity(fp32: Path, int8: Path, photos: list[Path], human_mos: list[float],
             sanity: list[Path]) -> dict:
    """How much of `fp32` the `int8` model keeps, on photos neither was calibrated or trained
    on (`photos` with their human MOS) and on a sanity set of whole photos."""
    tensors = calibration_tensors(fp32, photos)
    cards = load_card(fp32), load_card(int8)
    full, small = (model_outputs(ModelSession(card), tensors, batch=8) for card in cards)
    mos = np.asarray(human_mos, np.float64)
    srcc_fp32, srcc_int8 = float(srcc(full.mos, mos)), float(srcc(small.mos, mos))
    labels_fp32, labels_int8 = decided_labels(cards[0], full), decided_labels(cards[1], small)
    agree = float(np.mean(labels_fp32 == labels_int8))
    sanity_fp32, sanity_int8 = ([r.label for r in score_paths(card, sanity)] for card in cards)
    changed = [p.name for p, a, b in zip(sanity, sanity_fp32, sanity_int8) if a != b]
    report = {
        "photos": len(photos),
        "srcc_fp32": round(srcc_fp32, 4), "srcc_int8": round(srcc_int8, 4),
        "srcc_change": round(srcc_int8 - srcc_fp32, 4),
        "labels_agree": round(agree, 4),
        "labels_changed": int(np.sum(labels_fp32 != labels_int8)),
        "max_mos_change": round(float(np.max(np.abs(full.mos - small.mos))), 2),
        "sanity_photos": len(sanity), "sanity_labels_changed": changed,
    }
    report["holds"] = bool(srcc_fp32 - srcc_int8 <= MAX_SRCC_DROP
                           and agree >= MIN_LABEL_AGREEMENT and not changed)
    return report


def quantize_model(fp32: Path, config: Path, data_root: Path, out: Path, split: str = "val",
                   calibration: int = 100, sanity: Path | None = None) -> dict:
    """Write OUT.onnx (int8 of `fp32`) and OUT.json (fp32's card plus `precision`: how it was
    made and its fidelity on the config's held-out `split` and on the whole photos in `sanity`,
    default DATA_ROOT/pristine). All or nothing, like export. Returns the `precision` entry."""
    fp32, out = Path(fp32), Path(out)
    out = out.with_suffix("") if out.suffix == ".onnx" else out
    train = commands.split_records(config, data_root, "train")
    rng = np.random.default_rng(0)
    chosen = [train[i] for i in sorted(rng.choice(len(train), min(calibration, len(train)),
                                                  replace=False))]
    held_out = [r for r in commands.split_records(config, data_root, split) if r.mos is not None]
    sanity = Path(data_root) / "pristine" if sanity is None else Path(sanity)
    sanity_photos = sorted(sanity.glob("*.jpg")) if sanity.is_dir() else []
    tmp = out.parent / f".{out.name}-tmp.onnx"  # a model and card pair the run time can load
    try:
        info = quantize(fp32, tmp, calibration_tensors(fp32, [r.path for r in chosen]))
        card = read_card(fp32.with_suffix(".json"))
        card = replace(card, name=out.name, sha256=sha256_file(tmp), onnx_path=tmp)
        write_card(card, tmp.with_suffix(".json"))
        report = fidelity(fp32, tmp, [r.path for r in held_out],
                          [float(r.mos) for r in held_out], sanity_photos)
        info.update({"calibration": f"{len(chosen)} photos of the train split of {config}, "
                                    "decoded as at run time",
                     "source": {"model": fp32.name, "sha256": sha256_file(fp32)},
                     "fidelity": {"split": split, **report,
                                  "rule": f"SRCC change >= -{MAX_SRCC_DROP}, labels agree >= "
                                          f"{MIN_LABEL_AGREEMENT:.0%}, sanity labels unchanged"}})
        card = replace(card, raw={**card.raw, "precision": info}, onnx_path=out.with_suffix(".onnx"))
        # The model first, its card (which holds the model's sha256) last, each whole.
        write_atomic(out.with_suffix(".onnx"), tmp.read_bytes())
        write_card(card, out.with_suffix(".json"))
    finally:
        for leftover in (tmp, tmp.with_suffix(".json")):
            if leftover.exists():
                leftover.unlink()
    return info


def main() -> None:
    parser = argparse.ArgumentParser(
        description="Quantize an exported model to int8 and check it against its fp32 source: "
                    "writes OUT.onnx and OUT.json (the fp32 card plus precision and fidelity).")
    parser.add_argument("--model", type=Path, required=True, help="the fp32 .onnx (card beside)")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="output stem")
    parser.add_argument("--split", default="val", help="held-out split for the fidelity check")
    parser.add_argument("--calibration", type=int, default=100,
                        help="training photos for the activation ranges")
    parser.add_argument("--sanity", type=Path, default=None,
                        help="folder of whole photos whose labels must not change "
                             "(default: DATA_ROOT/pristine)")
    args = parser.parse_args()
    info = quantize_model(args.model, args.config, args.data_root, args.out, args.split,
                          args.calibration, args.sanity)
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
