"""Bursts (issue 16): how well iqs groups bursts and picks their best frame, and what it costs.

The burst set is made from the pristine references (../shared/data/pristine, 20 sharp photos
of 20 different scenes), in one folder, as a camera would write it (JPEG with EXIF
DateTimeOriginal + SubSecTimeOriginal):

- one burst per reference: 8 frames 0.15-0.4 s apart, each a 92 % crop shifted by up to
  +-2.5 % of the frame (hand-held framing), with exposure steps of -1/3, 0, +1/3 EV; one clean
  frame, the others each with one defect: motion blur of 25, 15, 9 and 5 px, missed focus
  (the centre 60 % blurred, gaussian radius 4 and 2.5; the edges stay sharp), soft all over
  (radius 1.2);
- a tripod series for 5 of the scenes, 90 s after the bursts: 3 frames 1-2.5 s apart, shifted
  by up to 1 %: one clean, one soft all over (radius 1.2), one with missed focus (radius 2.5)
  at +-1/3 EV; a group of its own by time, one group with the burst under --similar-only;
- a recomposed frame for 5 scenes: a 2x zoomed crop of the same reference, shot within the
  burst (a different framing of the same place: its own shot, not a burst frame);
- 10 unrelated photos (CLIVE) dropped in between the bursts; bursts and those singles follow
  each other 0.6-1.5 s apart, so time alone would chain the whole set into one group.

Measured: pairwise grouping precision and recall (pairs of shots put in one group), best-frame
accuracy (the clean frame ranked first in the group that holds it), for the time + look
default and --similar-only; the descriptor study (same-scene vs different-scene pairs: ROC AUC
and the best pairwise F1 of each candidate descriptor); and photos/s of `iqs score` with and
without bursts.

    python bench/bursts.py [--model iqs-base] [--out report.json] [--features] [--keep DIR]

--features also measures the model's pooled features (the shipped backbone's 4896 block
statistics, computed with torch through iqs_training) as a descriptor.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import combinations
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from iqs_cli import capture  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
START = datetime(2026, 6, 13, 14, 0, 0, tzinfo=timezone.utc).timestamp()


@dataclass
class Frame:
    path: str
    scene: str  # what it shows (reference name; "clive-N" for singles, "+zoom" recomposed)
    series: str  # its burst by time: scene, scene+tripod, or its own name for a single
    clean: bool  # the frame that should rank first in its series
    taken: float  # seconds, camera clock
    kind: str = "clean"  # its defect (DEFECTS), "zoom", "single" or "tripod"


# --- making the set -------------------------------------------------------------------------


def _srgb_to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0, 1)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * x ** (1 / 2.4) - 0.055)


def expose(image: Image.Image, ev: float) -> Image.Image:
    if ev == 0:
        return image
    rgb = np.asarray(image, np.float32) / 255
    out = _linear_to_srgb(_srgb_to_linear(rgb) * 2.0 ** ev)
    return Image.fromarray((out * 255 + 0.5).astype(np.uint8))


def motion_blur(image: Image.Image, length: int, angle: float) -> Image.Image:
    """A straight smear of `length` px: the mean of copies shifted along the direction."""
    rgb = np.asarray(image, np.float32)
    out = np.zeros_like(rgb)
    steps = max(2, length)
    for i in range(steps):
        t = i / (steps - 1) - 0.5
        dx, dy = round(t * length * math.cos(angle)), round(t * length * math.sin(angle))
        out += np.roll(rgb, (dy, dx), axis=(0, 1))
    return Image.fromarray((out / steps + 0.5).astype(np.uint8))


def missed_focus(image: Image.Image, radius: float, keep_edges: bool = True) -> Image.Image:
    blurred = image.filter(ImageFilter.GaussianBlur(radius))
    if not keep_edges:
        return blurred
    w, h = image.size
    mask = Image.new("L", image.size, 0)
    box = (int(w * 0.2), int(h * 0.2), int(w * 0.8), int(h * 0.8))
    mask.paste(255, box)
    mask = mask.filter(ImageFilter.GaussianBlur(min(w, h) * 0.03))
    return Image.composite(blurred, image, mask)


def shifted_crop(image: Image.Image, rng: random.Random, scale: float = 0.92,
                 shift: float = 0.025) -> Image.Image:
    w, h = image.size
    cw, ch = int(w * scale), int(h * scale)
    cx = (w - cw) / 2 + rng.uniform(-shift, shift) * w
    cy = (h - ch) / 2 + rng.uniform(-shift, shift) * h
    left, top = int(max(0, min(w - cw, cx))), int(max(0, min(h - ch, cy)))
    return image.crop((left, top, left + cw, top + ch))


def save_with_time(image: Image.Image, path: Path, taken: float) -> None:
    moment = datetime.fromtimestamp(taken, tz=timezone.utc)
    exif = Image.Exif()
    ifd = exif.get_ifd(0x8769)
    ifd[0x9003] = moment.strftime("%Y:%m:%d %H:%M:%S")
    ifd[0x9291] = f"{moment.microsecond // 10000:02d}"
    image.save(path, quality=92, exif=exif)


DEFECTS = [("clean", None), ("motion25", 25), ("motion15", 15), ("motion9", 9), ("motion5", 5),
           ("focus4", 4.0), ("focus2.5", 2.5), ("soft1.2", 1.2)]


def make_set(references: list[Path], singles: list[Path], folder: Path, seed: int = 0,
             tripods: int = 5, recomposed: int = 5) -> list[Frame]:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    frames: list[Frame] = []
    clock = START
    singles = list(singles)
    counter = 0

    def write(image: Image.Image, scene: str, series: str, clean: bool, taken: float,
              kind: str) -> None:
        nonlocal counter
        counter += 1
        path = folder / f"IMG_{counter:04d}.JPG"
        save_with_time(image, path, taken)
        frames.append(Frame(str(path), scene, series, clean, taken, kind))

    for index, reference in enumerate(references):
        scene = reference.stem
        with Image.open(reference) as opened:
            base = opened.convert("RGB")
        order = list(DEFECTS)
        rng.shuffle(order)
        zoom_at = rng.randrange(len(order)) if index < recomposed else None
        for position, (kind, amount) in enumerate(order):
            frame = shifted_crop(base, rng)
            frame = expose(frame, 0 if kind == "clean" else rng.choice((-1 / 3, 0, 1 / 3)))
            if kind.startswith("motion"):
                frame = motion_blur(frame, amount, rng.uniform(0, math.pi))
            elif kind.startswith("focus"):
                frame = missed_focus(frame, amount)
            elif kind.startswith("soft"):
                frame = missed_focus(frame, amount, keep_edges=False)
            clock += rng.uniform(0.15, 0.4)
            write(frame, scene, scene, kind == "clean", clock, kind)
            if position == zoom_at:
                w, h = base.size
                zoom = base.crop((w // 4, h // 4, w // 4 + w // 2, h // 4 + h // 2))
                zoom = zoom.resize((int(w * 0.92), int(h * 0.92)), Image.Resampling.LANCZOS)
                clock += rng.uniform(0.3, 0.6)
                write(zoom, scene + "+zoom", scene + "+zoom", True, clock, "zoom")
        if singles and index % 2 == 1:
            clock += rng.uniform(0.6, 1.5)
            with Image.open(singles.pop(0)) as opened:
                single = opened.convert("RGB")
            name = f"clive-{counter + 1}"
            write(single, name, name, True, clock, "single")
        clock += rng.uniform(0.6, 1.5)
    # Tripod series: the same scenes again, 90 s after everything above.
    clock += 90
    for reference in references[:tripods]:
        with Image.open(reference) as opened:
            base = opened.convert("RGB")
        for kind in ("clean", "soft1.2", "focus2.5"):
            frame = shifted_crop(base, rng, shift=0.01)
            if kind != "clean":
                frame = expose(frame, rng.choice((-1 / 3, 0, 1 / 3)))
                frame = missed_focus(frame, float(kind[-3:]), keep_edges=kind.startswith("focus"))
            clock += rng.uniform(1.0, 2.5)
            write(frame, reference.stem, reference.stem + "+tripod", kind == "clean", clock,
                  "tripod-" + kind)
        clock += 60
    return frames


# --- descriptor study -----------------------------------------------------------------------


def _luma(image: Image.Image, side: int) -> np.ndarray:
    return np.asarray(image.convert("L").resize((side, side), Image.Resampling.BOX), np.float32)


def phash(image: Image.Image) -> np.ndarray:
    """64-bit DCT hash: signs of the 8 x 8 lowest DCT coefficients of a 32 x 32 luma (vs their
    median)."""
    pixels = _luma(image, 32)
    n = 32
    k = np.arange(n)
    basis = np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * n))
    dct = basis @ pixels @ basis.T
    low = dct[:8, :8].ravel()
    return low > np.median(low[1:])


def dhash(image: Image.Image) -> np.ndarray:
    pixels = np.asarray(image.convert("L").resize((9, 8), Image.Resampling.BOX), np.float32)
    return (pixels[:, 1:] > pixels[:, :-1]).ravel()


def _auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """P(a same-scene pair scores above a different-scene pair); ties count half."""
    scores = np.concatenate([positives, negatives])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks of ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    n_pos, n_neg = len(positives), len(negatives)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _best_f1(positives: np.ndarray, negatives: np.ndarray) -> tuple[float, float]:
    best = (0.0, float("nan"))
    for threshold in np.unique(np.concatenate([positives, negatives])):
        tp = float((positives >= threshold).sum())
        fp = float((negatives >= threshold).sum())
        fn = len(positives) - tp
        f1 = 2 * tp / max(2 * tp + fp + fn, 1)
        if f1 > best[0]:
            best = (f1, float(threshold))
    return best


def study_descriptors(frames: list[Frame], min_side: int, features: bool = False) -> dict:
    """Each candidate's similarity for same-scene pairs (burst and tripod frames of one
    reference) and different-scene pairs (anything else, recomposed frames included)."""
    from iqs_cli.decode import load_rgb

    images = [load_rgb(f.path, min_side) for f in frames]
    candidates: dict[str, list] = {
        "thumbnail (iqs: 8x8 luma corr + EV + 4x4 chroma)": [capture.descriptor(i) for i in images],
        "8x8 luma correlation alone": [_luma(i, 8) for i in images],
        "16x16 luma correlation": [_luma(i, 16) for i in images],
        "DCT hash (pHash, 64 bit)": [phash(i) for i in images],
        "gradient hash (dHash, 64 bit)": [dhash(i) for i in images],
    }
    compare = {
        "thumbnail (iqs: 8x8 luma corr + EV + 4x4 chroma)": capture.similarity,
        "8x8 luma correlation alone": lambda a, b: capture.correlation(a, b) or 0.0,
        "16x16 luma correlation": lambda a, b: capture.correlation(a, b) or 0.0,
        "DCT hash (pHash, 64 bit)": lambda a, b: 1.0 - float(np.mean(a != b)),
        "gradient hash (dHash, 64 bit)": lambda a, b: 1.0 - float(np.mean(a != b)),
    }
    if features:
        vectors = pooled_features([f.path for f in frames])
        vectors = (vectors - vectors.mean(0)) / (vectors.std(0) + 1e-6)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        name = "model pooled features (4896, cosine)"
        candidates[name] = list(vectors)
        compare[name] = lambda a, b: float(a @ b)
    report = {}
    for name, values in candidates.items():
        positives, negatives = [], []
        for (i, a), (j, b) in combinations(enumerate(frames), 2):
            same = a.scene == b.scene
            (positives if same else negatives).append(compare[name](values[i], values[j]))
        positives, negatives = np.array(positives), np.array(negatives)
        f1, threshold = _best_f1(positives, negatives)
        report[name] = {"auc": round(_auc(positives, negatives), 4), "best_pair_f1": round(f1, 4),
                        "at": round(threshold, 3), "pairs": [len(positives), len(negatives)],
                        "worst_same": round(float(positives.min()), 3),
                        "best_different": round(float(negatives.max()), 3)}
    return report


def facts_cost(frames: list[Frame], min_side: int) -> dict:
    """ms per photo of what the decoding thread adds for bursts: the descriptor of the image
    already decoded, and the EXIF capture time."""
    from iqs_cli.decode import load_rgb

    images = [load_rgb(f.path, min_side) for f in frames]
    started = time.perf_counter()
    for image in images:
        capture.descriptor(image)
    middle = time.perf_counter()
    for f in frames:
        capture.capture_time(f.path)
    ended = time.perf_counter()
    return {"descriptor_ms": round(1000 * (middle - started) / len(frames), 3),
            "capture_time_ms": round(1000 * (ended - middle) / len(frames), 3)}


def pooled_features(paths: list[str]) -> np.ndarray:
    """The shipped backbone's pooled block statistics (what a model's `features` output
    carries before its normalization), at the shipped model's input."""
    import torch

    from iqs_cli.card import image_to_tensor, load_card
    from iqs_training.model import IQSNet

    card = load_card(None)
    net = IQSNet(pretrained=True, multiscale="blocks", trainable_blocks=0,
                 train_conv_head=False, feature_norm=False).eval()
    from iqs_cli.decode import load_rgb

    rows = []
    with torch.no_grad():
        for start in range(0, len(paths), 8):
            batch = np.stack([image_to_tensor(load_rgb(p, card.input.decode_min_side), card.input)
                              for p in paths[start:start + 8]])
            _, pooled = net.encode_prefix(torch.from_numpy(batch))
            rows.append(pooled.numpy())
    return np.concatenate(rows)


# --- the whole run --------------------------------------------------------------------------


def grouping_figures(frames: list[Frame], results: list, similar_only: bool) -> dict:
    by_path = {r.path: r for r in results}
    truth_key = (lambda f: f.scene if not f.scene.endswith("+zoom") else f.path) if similar_only \
        else (lambda f: f.series)
    truth = {f.path: truth_key(f) for f in frames}
    found = {f.path: by_path[os.path.abspath(f.path)].group for f in frames}
    tp = fp = fn = 0
    for a, b in combinations([f.path for f in frames], 2):
        same_truth = truth[a] == truth[b]
        same_found = found[a] is not None and found[a] == found[b]
        tp += same_truth and same_found
        fp += same_found and not same_truth
        fn += same_truth and not same_found
    # Best frame: for each true group of 2+, is the frame ranked first in the group holding
    # its clean frame(s) a clean one? (Under --similar-only a burst and its tripod series are
    # one group with two clean frames: either is right.)
    series: dict[str, list[Frame]] = {}
    for f in frames:
        series.setdefault(truth[f.path], []).append(f)
    kind_of = {os.path.abspath(f.path): f.kind for f in frames}
    right = total = 0
    misses = []
    for key, members in series.items():
        if len(members) < 2:
            continue
        total += 1
        clean = [os.path.abspath(m.path) for m in members if m.clean]
        best = by_path[clean[0]].group_best
        if best in clean:
            right += 1
        else:
            misses.append({"series": key, "best": Path(best).name if best else None,
                           "best_kind": kind_of.get(best or ""),
                           "clean_rank": by_path[clean[0]].group_rank})
    return {"pair_precision": round(tp / max(tp + fp, 1), 4),
            "pair_recall": round(tp / max(tp + fn, 1), 4),
            "groups_found": len({g for g in found.values() if g is not None}),
            "groups_true": sum(1 for m in series.values() if len(m) >= 2),
            "best_frame_accuracy": round(right / max(total, 1), 4), "best_frame_misses": misses}


GROUPING = {"seconds": 0.0, "profiles": 0}  # time in FolderGrouper.flush, frames ranked


def _timed_grouping() -> None:
    """Count the time bursts take on top of scoring (grouping, the second decodes, ranking)."""
    from iqs_cli import bursts

    if getattr(bursts.FolderGrouper.flush, "timed", False):
        return
    flush, profiles = bursts.FolderGrouper.flush, bursts.FolderGrouper._profiles

    def timed_flush(self):
        started = time.perf_counter()
        try:
            return flush(self)
        finally:
            GROUPING["seconds"] += time.perf_counter() - started

    def counted_profiles(self, paths):
        GROUPING["profiles"] += len(paths)
        return profiles(self, paths)

    timed_flush.timed = True
    bursts.FolderGrouper.flush, bursts.FolderGrouper._profiles = timed_flush, counted_profiles


def run_iqs(folder: Path, model: str | None, bursts: bool, similar_only: bool = False,
            workers: int | None = None) -> tuple[list, float]:
    from iqs_cli import workflow

    _timed_grouping()

    shots = workflow.find_shots([str(folder)])
    options = workflow.ScoreOptions(model=model, no_cache=True, workers=workers, no_bursts=not bursts,
                                    similar_only=similar_only)
    started = time.perf_counter()
    run = workflow.score(shots, options)
    return run.results, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--references", type=Path, default=SHARED / "pristine")
    parser.add_argument("--singles", type=Path, default=SHARED / "clive" / "images")
    parser.add_argument("--model", default=None)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--features", action="store_true")
    parser.add_argument("--keep", type=Path, help="make the set here and keep it")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()

    references = sorted(args.references.glob("*.jpg"))
    singles = sorted(args.singles.glob("*.jpg"))[:10]
    folder = args.keep or Path(tempfile.mkdtemp(prefix="iqs-bursts-"))
    report: dict = {"set": {}}
    try:
        made = time.perf_counter()
        frames = make_set(references, singles, folder / "card", seed=args.seed)
        report["set"] = {"frames": len(frames), "references": len(references),
                         "seconds_to_make": round(time.perf_counter() - made, 1)}
        print(f"{len(frames)} frames in {folder / 'card'}", flush=True)

        from iqs_cli.card import load_card

        min_side = load_card(args.model).input.decode_min_side
        report["descriptors"] = study_descriptors(frames, min_side, features=args.features)
        for name, figures in report["descriptors"].items():
            print(f"{name:55s} AUC {figures['auc']:.4f}  best pair F1 {figures['best_pair_f1']:.3f}"
                  f" at {figures['at']}  (worst same {figures['worst_same']}, best different "
                  f"{figures['best_different']})", flush=True)

        GROUPING.update(seconds=0.0, profiles=0)
        report["facts_per_photo"] = facts_cost(frames, min_side)
        print(f"in the decoding thread, per photo: descriptor "
              f"{report['facts_per_photo']['descriptor_ms']} ms, capture time "
              f"{report['facts_per_photo']['capture_time_ms']} ms", flush=True)
        results, seconds = run_iqs(folder / "card", args.model, bursts=True)
        report["default"] = grouping_figures(frames, results, similar_only=False)
        report["default"]["seconds"] = round(seconds, 2)
        report["default"]["grouping_seconds"] = round(GROUPING["seconds"], 2)
        report["default"]["frames_ranked"] = GROUPING["profiles"]
        print(f"grouping and ranking: {GROUPING['seconds']:.2f} s of {seconds:.1f} s "
              f"({GROUPING['profiles']} frames decoded again to rank them)", flush=True)
        results, seconds_similar = run_iqs(folder / "card", args.model, bursts=True,
                                           similar_only=True)
        report["similar_only"] = grouping_figures(frames, results, similar_only=True)
        report["similar_only"]["seconds"] = round(seconds_similar, 2)
        for mode in ("default", "similar_only"):
            figures = report[mode]
            print(f"{mode:13s} pairs: precision {figures['pair_precision']:.3f} recall "
                  f"{figures['pair_recall']:.3f}; groups {figures['groups_found']} found / "
                  f"{figures['groups_true']} true; best frame "
                  f"{figures['best_frame_accuracy']:.3f} ({len(figures['best_frame_misses'])} missed)",
                  flush=True)
        if not args.skip_speed:
            timings = {}
            for bursts in (False, True, False, True):
                _, seconds = run_iqs(folder / "card", args.model, bursts=bursts)
                timings.setdefault("bursts" if bursts else "no_bursts", []).append(seconds)
            speed = {k: round(len(frames) / min(v), 2) for k, v in timings.items()}
            report["photos_per_second"] = speed
            print(f"photos/s: {speed['no_bursts']} without bursts, {speed['bursts']} with "
                  f"(best of 2 runs, {os.cpu_count()} cores)", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
