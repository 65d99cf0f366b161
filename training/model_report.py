"""Everything the card and README report about a shipped model, measured in one run.

    python -m training.model_report --model weights/iqs-base.onnx \
        --config training/configs/iqs-base.json --data-root ../shared/data --update-card

On data the model did not train on (the config's validation split, and synthetic distortions
of pristine references the config does not list):
- LIVE Challenge (CLIVE) validation: SRCC / PLCC / KRCC / RMSE of the MOS head, 3-class
  accuracy and confusion (`iqs eval`), and the figures of digiKam's classic sorter (SRCC of
  the three labels with MOS, the share of the worst-rated fifth rejected);
- a classical blind baseline (NIQE, LIVE's pristine model) on the same validation photos;
- per distortion type: SRCC between predicted MOS and distortion level (0 = the reference)
  on held-out references, and how often severe levels are rejected and references are not;
- speed of the model alone (ONNX Runtime, batch 16) on this machine's CPU, and on CUDA when
  ONNX Runtime has it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from iqs_cli.card import CLASSES, image_to_tensor, load_card
from iqs_cli.decode import load_rgb
from iqs_cli.engine import ModelSession
from training import commands
from training.datasets import synthetic as synth
from training.metrics import mos_metrics, srcc

# Severe distortions a photographer rejects on sight: the "always rejected" set.
MUST_REJECT = ("gaussian_blur", "lens_blur", "motion_blur", "gaussian_noise", "shot_noise",
               "underexposure", "jpeg", "recompression")


# What the three classes mean for the shipped model (training/configs/iqs-base.json).
CLASS_DEFINITIONS = {
    "rejected": "clearly distorted: LIVE Challenge MOS below 35, or a synthetic distortion at "
                "level 4-5 or with a full-reference pseudo-MOS below 30",
    "pending": "the rest: LIVE Challenge MOS 42-70, milder synthetic distortions",
    "accepted": "sharp, well exposed, pleasing: LIVE Challenge MOS 75 and up, undistorted "
                "pristine references",
    "not_labelled": "LIVE Challenge MOS 35-42 and 70-75 train the MOS head only",
}


def _session(card, device: str) -> ModelSession:
    return ModelSession(card, device=device)  # exactly what `iqs score` runs


def _run(session: ModelSession, tensors: list[np.ndarray], batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """(class probabilities [N, 3], MOS [N]) in batches."""
    outputs = [session.infer(np.stack(tensors[start:start + batch]))
               for start in range(0, len(tensors), batch)]
    return (np.concatenate([o.probabilities for o in outputs]),
            np.concatenate([o.mos for o in outputs]))


def clive_report(model: Path, config: Path, data_root: Path) -> tuple[dict, list]:
    report = commands.evaluate(model, config, data_root, split="val")
    data = commands._load_data(commands.read_config(config), data_root)
    return report, data.val


def digikam_figures(model: Path, records) -> dict:
    """The figures DESIGN.md gives for digiKam's classic sorter, for our labels."""
    card = load_card(model)
    session = _session(card, "cpu")
    tensors = [image_to_tensor(load_rgb(r.path, card.input.decode_min_side), card.input) for r in records]
    probs, pred_mos = _run(session, tensors)
    labels = probs.argmax(1)
    mos = np.array([r.mos for r in records])
    worst = mos <= np.quantile(mos, 0.2)
    best = mos >= np.quantile(mos, 0.8)
    return {
        "n": len(records),
        "label_srcc_with_mos": round(srcc(labels, mos), 4),
        "worst_fifth_rejected": round(float((labels[worst] == 0).mean()), 4),
        "worst_fifth_accepted": round(float((labels[worst] == 2).mean()), 4),
        "best_fifth_accepted": round(float((labels[best] == 2).mean()), 4),
        "best_fifth_rejected": round(float((labels[best] == 0).mean()), 4),
        "label_counts": {name: int((labels == i).sum()) for i, name in enumerate(CLASSES)},
    }


def niqe_report(records) -> dict:
    from training.baselines import baseline_scores

    started = time.perf_counter()
    scores = baseline_scores([r.path for r in records], method="niqe")
    mos = np.array([r.mos for r in records])
    metrics = mos_metrics(-scores, mos)
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    return {"niqe_live_pristine": metrics}


def held_out_references(config: Path, data_root: Path) -> list[Path]:
    raw = commands.read_config(config)
    used = {(data_root / p).resolve() for p in raw["train"]["synthetic"]["references"]}
    return [p for p in sorted((data_root / "pristine").glob("*.jpg")) if p.resolve() not in used]


def synthetic_report(model: Path, references: list[Path], crops_per_reference: int = 2,
                     seed: int = 0) -> dict:
    """Predicted MOS against distortion level, per type, on references held out of training."""
    card = load_card(model)
    size = card.input.size
    session = _session(card, "cpu")
    rng = np.random.default_rng(seed)
    crops = []
    for path in references:
        image = load_rgb(path, size)
        scale = round(size * 9 / 8) / min(image.size)  # like training: reference a bit above input size
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
        for _ in range(crops_per_reference):
            left = int(rng.integers(0, image.width - size + 1))
            top = int(rng.integers(0, image.height - size + 1))
            crops.append(np.asarray(image.crop((left, top, left + size, top + size))))
    ref_probs, ref_mos = _run(session, [image_to_tensor(Image.fromarray(c), card.input) for c in crops])
    per_type = {}
    for kind in synth.DISTORTIONS:
        levels, tensors = [], []
        for crop in crops:
            for level in synth.LEVELS:
                distorted = synth.distort(crop, kind, level, rng)
                tensors.append(image_to_tensor(Image.fromarray(distorted), card.input))
                levels.append(level)
        probs, mos = _run(session, tensors)
        levels = np.array(levels)
        all_levels = np.concatenate([np.zeros(len(crops)), levels])
        all_mos = np.concatenate([ref_mos, mos])
        labels = probs.argmax(1)
        per_type[kind] = {
            "srcc_mos_vs_level": round(-srcc(all_mos, all_levels), 4),
            "mean_mos_by_level": [round(float(ref_mos.mean()), 1)]
            + [round(float(mos[levels == lv].mean()), 1) for lv in synth.LEVELS],
            "rejected_at_level": [round(float((labels[levels == lv] == 0).mean()), 3) for lv in synth.LEVELS],
        }
    severe = [per_type[k]["rejected_at_level"][4] for k in MUST_REJECT]
    return {
        "references": [p.name for p in references],
        "crops": len(crops),
        "mean_srcc_mos_vs_level": round(float(np.mean([v["srcc_mos_vs_level"] for v in per_type.values()])), 4),
        "references_rejected": round(float((ref_probs.argmax(1) == 0).mean()), 4),
        "references_accepted": round(float((ref_probs.argmax(1) == 2).mean()), 4),
        "severe_level5_rejected": {k: per_type[k]["rejected_at_level"][4] for k in MUST_REJECT},
        "severe_level5_rejected_mean": round(float(np.mean(severe)), 4),
        "per_type": per_type,
    }


def whole_photo_report(model: Path, references: list[Path]) -> dict:
    """The held-out references as whole photos, the way `iqs score` sees them."""
    card = load_card(model)
    session = _session(card, "cpu")
    tensors = [image_to_tensor(load_rgb(p, card.input.decode_min_side), card.input) for p in references]
    probs, mos = _run(session, tensors)
    return {p.name: {"label": CLASSES[int(pr.argmax())], "mos": round(float(m), 1)}
            for p, pr, m in zip(references, probs, mos)}


def speed_report(model: Path, batch: int = 16, seconds: float = 10.0) -> dict:
    import onnxruntime as ort

    card = load_card(model)
    size = card.input.size
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    result = {"batch": batch, "input": size, "cpu_count": os.cpu_count()}
    devices = ["cpu"] + (["cuda"] if "CUDAExecutionProvider" in ort.get_available_providers() else [])
    for device in devices:
        session = _session(card, device)
        session.infer(x)  # warm-up
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            session.infer(x)
            done += batch
        result[f"{device}_images_per_s"] = round(done / (time.perf_counter() - started), 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=None, help="write the report JSON here")
    parser.add_argument("--update-card", action="store_true", help="store the figures in the model card")
    args = parser.parse_args()

    started = time.perf_counter()
    clive, val_records = clive_report(args.model, args.config, args.data_root)
    references = held_out_references(args.config, args.data_root)
    report = {
        "clive_val": {"mos": clive["mos"].get("clive"), "class": clive["class"].get("clive")},
        "digikam_figures": digikam_figures(args.model, val_records),
        "baseline": niqe_report(val_records),
        "synthetic_held_out": synthetic_report(args.model, references),
        "held_out_references_whole": whole_photo_report(args.model, references),
        "speed": speed_report(args.model),
    }
    report["seconds"] = round(time.perf_counter() - started, 1)
    from training.evaluate import plain_json

    text = json.dumps(plain_json(report), indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if args.update_card:
        card_path = args.model.with_suffix(".json")
        card = json.loads(card_path.read_text())
        metrics = card.setdefault("metrics", {})
        metrics["clive_val_labels"] = report["digikam_figures"]
        metrics["baselines_clive_val"] = report["baseline"]
        synthetic = dict(report["synthetic_held_out"])
        synthetic["srcc_by_type"] = {k: v["srcc_mos_vs_level"] for k, v in synthetic.pop("per_type").items()}
        metrics["synthetic_held_out"] = synthetic
        card["speed"] = report["speed"]
        card["class_definitions"] = CLASS_DEFINITIONS
        tmp = card_path.with_name(f".{card_path.name}.tmp")
        tmp.write_text(json.dumps(plain_json(card), indent=2) + "\n")
        os.replace(tmp, card_path)


if __name__ == "__main__":
    main()
