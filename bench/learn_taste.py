"""How well `iqs learn` picks up a person's rule that the shipped model does not follow.

Builds a photo library from LIVE Challenge photos (../shared/data/clive/images) in a temporary
folder: half the photos are edited by a rule (a strong colour cast in one of four directions, or
black and white) and the "person" rejects exactly those, labelling the library a third each the
way digiKam (pick label), darktable (rating -1, darktable's 1 star for keepers) and Lightroom
(photo.xmp, rating -1 / stars) write labels. Then:

1. `iqs learn` on the library: its held-out (cross-fitted) figures against the base model's;
2. `iqs score --model <learned>` and the base model on other photos, edited by the same rule,
   that neither the person nor the head ever saw.

    python bench/learn_taste.py --rule cast --labelled 200 --new 100 [--model iqs-base]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from iqs_cli.learn import LearnOptions, learn
from iqs_cli.workflow import ScoreOptions, find_shots, score

CLIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "clive" / "images"
CASTS = {"red": (1.35, 1.0, 0.65), "green": (0.8, 1.3, 0.8), "blue": (0.65, 0.95, 1.4),
         "yellow": (1.3, 1.2, 0.6)}

DIGIKAM = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
           '22-rdf-syntax-ns#"><rdf:Description rdf:about="" xmlns:digiKam="http://www.digikam.'
           'org/ns/1.0/" digiKam:PickLabel="{pick}"/></rdf:RDF></x:xmpmeta>')
DARKTABLE = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
             '22-rdf-syntax-ns#"><rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/'
             'xap/1.0/" xmlns:darktable="http://darktable.sf.net/" xmp:Rating="{rating}" '
             'darktable:xmp_version="5"/></rdf:RDF></x:xmpmeta>')
LIGHTROOM = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
             '22-rdf-syntax-ns#"><rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/'
             'xap/1.0/"><xmp:Rating>{rating}</xmp:Rating></rdf:Description></rdf:RDF>'
             '</x:xmpmeta>')


def edited(image: Image.Image, rule: str, rng: np.random.Generator) -> Image.Image:
    pixels = np.asarray(image.convert("RGB"), np.float32)
    if rule == "cast":
        gains = CASTS[list(CASTS)[rng.integers(len(CASTS))]]
        pixels = pixels * np.array(gains, np.float32)
    elif rule == "monochrome":
        pixels = np.repeat((pixels @ np.array([0.299, 0.587, 0.114], np.float32))[..., None], 3, 2)
    else:
        raise ValueError(rule)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def make_library(folder: Path, photos: list[Path], rule: str, seed: int, labels: bool) -> list[bool]:
    """Copies of `photos` in `folder`, every other one edited by `rule`; with `labels`, the
    person's labels in three applications' ways. Returns which were edited."""
    rng = np.random.default_rng(seed)
    ruled = []
    for index, source in enumerate(photos):
        style = ("digikam", "darktable", "lightroom")[index % 3]
        target = folder / style / f"IMG_{index:05d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        bad = bool(rng.random() < 0.5)
        image = Image.open(source).convert("RGB")
        (edited(image, rule, rng) if bad else image).save(target, quality=92)
        ruled.append(bad)
        if not labels:
            continue
        if style == "digikam":
            Path(f"{target}.xmp").write_text(DIGIKAM.format(pick=1 if bad else 3))
        elif style == "darktable":
            Path(f"{target}.xmp").write_text(DARKTABLE.format(rating=-1 if bad else 1))
        else:
            target.with_suffix(".xmp").write_text(
                LIGHTROOM.format(rating=-1 if bad else int(rng.integers(2, 6))))
    return ruled


def rejected_share(results, ruled: list[bool]) -> dict:
    by_path = {Path(r.path).name: r.label == "rejected" for r in results if r.ok}
    names = [f"IMG_{i:05d}.jpg" for i in range(len(ruled))]
    rule = np.array(ruled)
    rejected = np.array([by_path[n] for n in names])
    return {"edited_rejected": round(float(rejected[rule].mean()), 4),
            "unedited_rejected": round(float(rejected[~rule].mean()), 4),
            "agreement": round(float((rejected == rule).mean()), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rule", choices=("cast", "monochrome"), default="cast")
    parser.add_argument("--labelled", type=int, default=200)
    parser.add_argument("--new", type=int, default=100)
    parser.add_argument("--model", default="iqs-base")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    photos = sorted(CLIVE.glob("*.jpg")) + sorted(CLIVE.glob("*.bmp"))
    order = np.random.default_rng(args.seed).permutation(len(photos))
    chosen = [photos[i] for i in order[:args.labelled + args.new]]
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["IQS_CONFIG_DIR"] = os.environ["IQS_CACHE_DIR"] = tmp  # nothing of the user's
        library, new = Path(tmp) / "library", Path(tmp) / "new"
        make_library(library, chosen[:args.labelled], args.rule, args.seed, labels=True)
        ruled_new = make_library(new, chosen[args.labelled:], args.rule, args.seed + 1, labels=False)
        started = time.perf_counter()
        outcome = learn([str(library)], LearnOptions(name="bench", model=args.model))
        learn_seconds = time.perf_counter() - started
        shots = find_shots([str(new)])
        report = {
            "rule": args.rule, "base": outcome.base, "labels": outcome.counts,
            "learn_seconds": round(learn_seconds, 1), "reject_at": outcome.reject_at,
            "lambda": outcome.lambda_, "held_out_in_library": outcome.held_out,
            "new_photos": {
                "photos": len(ruled_new), "edited": int(sum(ruled_new)),
                "learned": rejected_share(score(shots, ScoreOptions(model="bench")).results,
                                          ruled_new),
                "base": rejected_share(score(shots, ScoreOptions(model=args.model)).results,
                                       ruled_new)},
        }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
