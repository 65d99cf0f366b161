"""Everything the card and README report about a shipped model, measured in one run.

    python -m iqs_training.model_report --model weights/iqs-base.onnx \
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
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from iqs_cli.card import image_to_tensor, load_card, plain_json
from iqs_cli.decode import load_rgb
from iqs_cli.engine import ModelSession, outputs_row
from iqs_cli.fsutil import write_atomic
from iqs_cli.verdict import decide
from iqs_cli.vocabulary import CLASSES
from . import commands
from .datasets import synthetic as synth
from .metrics import mos_metrics, srcc

# Severe distortions a photographer rejects on sight: the "always rejected" set.
MUST_REJECT = ("gaussian_blur", "lens_blur", "motion_blur", "gaussian_noise", "shot_noise",
               "underexposure", "jpeg", "recompression")


# What the three classes mean for the shipped model (training/configs/iqs-base.json).
CLASS_DEFINITIONS = {
    "rejected": "clearly distorted: LIVE Challenge MOS below 35, or a synthetic technical defect "
                "(blur, noise, exposure, compression, resampling, chromatic aberration, "
                "oversharpening, banding) at level 4-5 or with a full-reference pseudo-MOS below "
                "30; colour casts, desaturation, low contrast and vignetting look like a style "
                "(monochrome, fog, a mood grade) and never teach 'rejected'. A shot is rejected "
                "only when P(rejected) reaches the card's reject_at (and the MOS or a named "
                "defect agrees), or with a severe defect when 'rejected' is the likeliest class",
    "pending": "the rest: LIVE Challenge MOS 42-70, milder synthetic distortions",
    "accepted": "sharp, well exposed, pleasing: LIVE Challenge MOS 75 and up, undistorted "
                "pristine references, and their photographer's styles (shallow focus and panning "
                "with a sharp subject, fog, low and high key, vignetting, black and white); their "
                "defective twins (soft everywhere, focus on nothing, camera shake, dark and noisy, "
                "darkened to 8-25 %, blown out) teach 'rejected'",
    "not_labelled": "LIVE Challenge MOS 35-42 and 70-75 train the MOS head only",
}


def _session(card, device: str) -> ModelSession:
    return ModelSession(card, device=device)  # exactly what `iqs score` runs


def decided_labels(card, outputs: "Outputs") -> np.ndarray:
    """Class index per row, decided as `iqs score` decides (iqs_cli.verdict.decide: the card's
    thresholds, made coherent with the MOS and the defect severities)."""
    return np.array([CLASSES.index(decide(dict(zip(CLASSES, p)), float(m), a, card).label)
                     for p, m, a in zip(outputs.probs, outputs.mos, outputs.attributes)], dtype=np.int64)


@dataclass
class Outputs:
    probs: np.ndarray  # [N, 3]
    mos: np.ndarray  # [N]
    attributes: list[dict]  # per row: attribute -> severity


def model_outputs(session: ModelSession, tensors: list[np.ndarray], batch: int = 16) -> Outputs:
    """The model's outputs on `tensors`, in batches."""
    rows = []
    for start in range(0, len(tensors), batch):
        out = session.infer(np.stack(tensors[start:start + batch]))
        rows += [outputs_row(out, i, session.card) for i in range(len(out.mos))]
    return Outputs(np.array([[r["probabilities"][c] for c in CLASSES] for r in rows]),
                   np.array([r["mos"] for r in rows]), [r["attributes"] for r in rows])


def clive_report(model: Path, config: Path, data_root: Path) -> tuple[dict, list]:
    report = commands.evaluate(model, config, data_root, split="val")
    data = commands._load_data(commands.read_config(config), data_root)
    return report, data.val


def digikam_figures(model: Path, records) -> dict:
    """The figures DESIGN.md gives for digiKam's classic sorter, for our labels."""
    card = load_card(model)
    session = _session(card, "cpu")
    tensors = [image_to_tensor(load_rgb(r.path, card.input.decode_min_side), card.input) for r in records]
    labels = decided_labels(card, model_outputs(session, tensors))
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
    from .baselines import baseline_scores

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
    ref = model_outputs(session, [image_to_tensor(Image.fromarray(c), card.input) for c in crops])
    ref_mos = ref.mos
    per_type = {}
    for kind in synth.DISTORTIONS:
        levels, tensors = [], []
        for crop in crops:
            for level in synth.LEVELS:
                distorted = synth.distort(crop, kind, level, rng)
                tensors.append(image_to_tensor(Image.fromarray(distorted), card.input))
                levels.append(level)
        out = model_outputs(session, tensors)
        mos = out.mos
        levels = np.array(levels)
        all_levels = np.concatenate([np.zeros(len(crops)), levels])
        all_mos = np.concatenate([ref_mos, mos])
        labels = decided_labels(card, out)
        per_type[kind] = {
            "srcc_mos_vs_level": round(-srcc(all_mos, all_levels), 4),
            "mean_mos_by_level": [round(float(ref_mos.mean()), 1)]
            + [round(float(mos[levels == lv].mean()), 1) for lv in synth.LEVELS],
            "rejected_at_level": [round(float((labels[levels == lv] == 0).mean()), 3) for lv in synth.LEVELS],
        }
    severe = [per_type[k]["rejected_at_level"][4] for k in MUST_REJECT]
    ref_labels = decided_labels(card, ref)
    return {
        "references": [p.name for p in references],
        "crops": len(crops),
        "mean_srcc_mos_vs_level": round(float(np.mean([v["srcc_mos_vs_level"] for v in per_type.values()])), 4),
        "references_rejected": round(float((ref_labels == 0).mean()), 4),
        "references_accepted": round(float((ref_labels == 2).mean()), 4),
        "severe_level5_rejected": {k: per_type[k]["rejected_at_level"][4] for k in MUST_REJECT},
        "severe_level5_rejected_mean": round(float(np.mean(severe)), 4),
        "per_type": per_type,
    }


def score_paths(card, paths: list[Path], focus: str = "rejected") -> list:
    """ShotResults exactly as `iqs score` makes them (second look included, unless focus="off")."""
    from iqs_cli.discover import Shot
    from iqs_cli.scoring import Scorer

    scorer = Scorer(_session(card, "cpu"), focus=focus, batch_size=8)
    return list(scorer.score(Shot(Path(p), [Path(p)]) for p in paths))


def _score_images(card, images: list[Image.Image], folder: Path, stem: str) -> list:
    """Save `images` losslessly into `folder` and score them as files (see _score_paths)."""
    paths = []
    for index, image in enumerate(images):
        path = folder / f"{stem}-{index:03d}.png"
        image.save(path, compress_level=1)
        paths.append(path)
    return score_paths(card, paths)


def whole_photo_report(model: Path, references: list[Path]) -> dict:
    """Whole photos scored as `iqs score` scores them (squashed to the input, plus the second
    look at the sharpest region for shots the whole view would reject): every pristine reference
    as it is (held out of training or not), the held-out ones with each severe (level 5)
    distortion of MUST_REJECT applied at the model's scale, and everyday edits of all of them
    at their own resolution."""
    import tempfile

    card = load_card(model)
    size = card.input.size
    held_out = {p.resolve() for p in references}
    pristine = sorted(references[0].parent.glob("*.jpg")) if references else []
    results = score_paths(card, pristine)
    whole_view = score_paths(card, pristine, focus="off")
    photos = {p.name: {"label": r.label, "mos": round(float(r.mos), 1), "reasons": r.reasons,
                       "label_whole_view_only": w.label, "held_out": p.resolve() in held_out}
              for p, r, w in zip(pristine, results, whole_view)}
    images = [load_rgb(p, 0) for p in pristine]
    rng = np.random.default_rng(1)
    severe, everyday = {}, {}
    with tempfile.TemporaryDirectory(prefix="iqs-report-") as tmp:
        folder = Path(tmp)
        for kind in MUST_REJECT:
            distorted = []
            for path, image in zip(pristine, images):
                if path.resolve() not in held_out:
                    continue
                scale = round(size * 9 / 8) / min(image.size)
                scaled = image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
                distorted.append(Image.fromarray(synth.distort(np.asarray(scaled), kind, 5, rng)))
            kind_results = _score_images(card, distorted, folder, kind)
            severe[kind] = round(float(np.mean([r.label == "rejected" for r in kind_results])), 4)
        # Defects as anyone would make them on a whole photo, independent of synthetic.py's levels.
        edits = {
            "darkened_to_15_percent": lambda im: Image.fromarray((np.asarray(im, np.float32) * 0.15).astype(np.uint8)),
            "gaussian_noise_sigma_40": lambda im: Image.fromarray(np.clip(
                np.asarray(im, np.float32) + rng.normal(0, 40, (im.height, im.width, 3)), 0, 255).astype(np.uint8)),
            "jpeg_quality_5": lambda im: _jpeg_round_trip(im, 5),
            "blur_1_percent_of_width": lambda im: im.filter(ImageFilter.GaussianBlur(im.width / 100)),
        }
        for name, edit in edits.items():
            edit_results = _score_images(card, [edit(im) for im in images], folder, name)
            everyday[name] = f"{sum(r.label == 'rejected' for r in edit_results)}/{len(images)}"
            everyday[f"{name}_pending"] = f"{sum(r.label == 'pending' for r in edit_results)}/{len(images)}"
    held = [v for v in photos.values() if v["held_out"]]
    return {
        "photos": photos,
        "held_out_rejected": sum(v["label"] == "rejected" for v in held),
        "training_references_rejected": sum(v["label"] == "rejected" for v in photos.values()
                                            if not v["held_out"]),
        "rejected_without_reason": sum(1 for r in results if r.label == "rejected" and not r.reasons),
        "held_out_level5_rejected": severe,
        "all_pristine_edited_rejected": everyday,
    }


def _jpeg_round_trip(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


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
        "whole_photos": whole_photo_report(args.model, references),
        "speed": speed_report(args.model),
    }
    report["seconds"] = round(time.perf_counter() - started, 1)
    publish(report, args.out)
    if args.update_card:
        def store(card: dict) -> None:
            metrics = card.setdefault("metrics", {})
            metrics["clive_val_labels"] = report["digikam_figures"]
            metrics["baselines_clive_val"] = report["baseline"]
            synthetic = dict(report["synthetic_held_out"])
            synthetic["srcc_by_type"] = {k: v["srcc_mos_vs_level"]
                                         for k, v in synthetic.pop("per_type").items()}
            metrics["synthetic_held_out"] = synthetic
            metrics["whole_photos"] = report["whole_photos"]
            card["speed"] = report["speed"]
            card["class_definitions"] = CLASS_DEFINITIONS

        update_card(args.model, store)


def publish(report: dict, out: Path | None) -> None:
    """Print a report as JSON, and write it to `out` when given."""
    text = json.dumps(plain_json(report), indent=2)
    print(text)
    if out:
        out.write_text(text + "\n")


def update_card(model: Path, edit) -> None:
    """Apply `edit` (card dict -> None) to the card beside `model`, replaced atomically."""
    card_path = Path(model).with_suffix(".json")
    card = json.loads(card_path.read_text())
    edit(card)
    write_atomic(card_path, json.dumps(plain_json(card), indent=2) + "\n")

if __name__ == "__main__":
    main()
