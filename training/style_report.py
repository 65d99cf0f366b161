"""How often a model rejects a photographer's styles, and how often it catches their defective twins.

    python -m iqs_training.style_report --model weights/iqs-base.onnx \
        --config training/configs/iqs-base.json --data-root ../shared/data [--update-card]

The proxy set is made of photos the model never trained on: the pristine references the
config does not list (held out of the synthetic data) and the config's CLIVE validation photos
rated `--min-mos` (75) and up. Each is styled as a whole photo at its own resolution (every
look of training/datasets/styles.py, pixel sizes scaled from the model's scale to the photo's),
`--draws` times with different random draws, saved as a JPEG (quality 95) and scored exactly as
`iqs score` scores it (iqs_cli.scoring.Scorer, with the second look at the sharpest region,
and again without it, to show what that look adds). Reported per look: shots, share rejected
(with and without the second look), and rejected shots that carry no reason.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from iqs_cli.card import load_card
from iqs_cli.decode import load_rgb
from iqs_cli.discover import Shot
from iqs_cli.engine import ModelSession
from iqs_cli.scoring import Scorer
from . import commands
from .datasets import styles
from .model_report import held_out_references, publish, update_card

# The short side the style's pixel sizes are meant for: training crops come from references
# resized to a short side of 512-640 (the configs' reference_short_side).
STYLE_SCALE_SIDE = 576


def proxy_references(config: Path, data_root: Path, min_mos: float) -> list[Path]:
    """Held-out pristine references + CLIVE validation photos rated min_mos and up."""
    data = commands._load_data(commands.read_config(config), data_root)
    good_val = [Path(r.path) for r in data.val if r.mos is not None and r.mos >= min_mos]
    return held_out_references(config, data_root) + sorted(good_val)


def make_proxy_set(references: list[Path], folder: Path, draws: int, seed: int = 0) -> dict[str, list[Path]]:
    """Write every look of every reference (and the reference itself) into `folder`."""
    rng = np.random.default_rng(seed)
    looks: dict[str, list[Path]] = {"reference": []}
    for index, path in enumerate(references):
        image = np.asarray(load_rgb(path, 0))
        scale = min(image.shape[:2]) / STYLE_SCALE_SIDE
        out = folder / f"{index:03d}-reference.jpg"
        Image.fromarray(image).save(out, quality=95)
        looks["reference"].append(out)
        for name in [*styles.STYLES, *styles.TWINS]:
            for draw in range(draws):
                if name in styles.STYLES:
                    styled = styles.apply_style(image, name, rng, scale)
                else:
                    styled, _ = styles.apply_twin(image, name, rng, scale)
                out = folder / f"{index:03d}-{name}-{draw}.jpg"
                Image.fromarray(styled).save(out, quality=95)
                looks.setdefault(name, []).append(out)
        # The black-and-white version of a shallow-focus shot: two styles at once.
        styled = styles.apply_style(styles.apply_style(image, "shallow_focus", rng, scale),
                                    "monochrome", rng)
        out = folder / f"{index:03d}-shallow_focus+monochrome.jpg"
        Image.fromarray(styled).save(out, quality=95)
        looks.setdefault("shallow_focus+monochrome", []).append(out)
    return looks


def score_looks(model: Path, looks: dict[str, list[Path]], focus: str) -> dict[str, dict]:
    card = load_card(model)
    scorer = Scorer(ModelSession(card), focus=focus, batch_size=8)
    report = {}
    for name, paths in looks.items():
        results = list(scorer.score(Shot(p, [p]) for p in paths))
        rejected = [r for r in results if r.label == "rejected"]
        report[name] = {
            "shots": len(results),
            "rejected": round(len(rejected) / max(1, len(results)), 3),
            "rejected_without_reason": sum(1 for r in rejected if not r.reasons),
            "errors": sum(1 for r in results if r.error),
        }
    return report


def style_report(model: Path, config: Path, data_root: Path, draws: int = 2,
                 min_mos: float = 75.0) -> dict:
    started = time.perf_counter()
    references = proxy_references(config, data_root, min_mos)
    with tempfile.TemporaryDirectory(prefix="iqs-style-proxy-") as tmp:
        looks = make_proxy_set(references, Path(tmp), draws)
        with_look = score_looks(model, looks, "rejected")
        without = score_looks(model, looks, "off")
    per_look = {}
    for name in looks:
        entry = dict(with_look[name])
        entry["rejected_without_second_look"] = without[name]["rejected"]
        entry["kind"] = ("reference" if name == "reference" else
                         "twin (should be rejected)" if name in styles.TWINS else "style (a keeper)")
        per_look[name] = entry
    kept_names = [n for n in per_look if n not in styles.TWINS]
    return {
        "references": [str(p.relative_to(data_root)) if p.is_relative_to(data_root) else str(p)
                       for p in references],
        "draws": draws,
        "styles_rejected": round(float(np.mean([per_look[n]["rejected"] for n in kept_names])), 3),
        "twins_rejected": round(float(np.mean([per_look[n]["rejected"] for n in styles.TWINS])), 3),
        "per_look": per_look,
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--draws", type=int, default=2, help="random draws of each look per photo")
    parser.add_argument("--min-mos", type=float, default=75.0)
    parser.add_argument("--out", type=Path, default=None, help="write the report JSON here")
    parser.add_argument("--update-card", action="store_true", help="store the figures in the model card")
    args = parser.parse_args()
    report = style_report(args.model, args.config, args.data_root.resolve(), args.draws, args.min_mos)
    publish(report, args.out)
    if args.update_card:
        def store(card: dict) -> None:
            card.setdefault("metrics", {})["style_proxy"] = report

        update_card(args.model, store)

if __name__ == "__main__":
    main()
