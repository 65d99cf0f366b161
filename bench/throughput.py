"""Throughput benchmark for `iqs score` (a benchmark, not a test).

Makes N large photo-like JPEGs (pristine photos upscaled to 6000x4000, with grain, quality 92)
and measures, on the same files, in separate processes so peak memory is each one's own:
  (a) decode only, JPEG draft mode to the model's input size: the floor of any pipeline;
  (b) `iqs score` end to end, cold cache;
  (c) a naive pipeline: full decode, resize, one image per inference call.
(b) also runs on half the files, to show whether peak memory grows with the number of photos,
and, with --focus-modes, once per `--focus-check` mode (the second look at the sharpest region
costs a larger decode and a second inference for each shot it looks at: `all` is the bound).

    python bench/throughput.py --count 200 --out bench/out [--model weights/iqs-base.onnx]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PRISTINE = ROOT.parent / "shared" / "data" / "pristine"


def make_one(args: tuple[Path, Path, int, tuple[int, int]]) -> None:
    source, target, seed, size = args
    if target.exists():
        return
    rng = np.random.default_rng(seed)
    image = Image.open(source).convert("RGB").resize(size, Image.BICUBIC)
    pixels = np.asarray(image, dtype=np.int16)
    grain = rng.normal(0, 4, (size[1], size[0], 1)).astype(np.int16)
    pixels = np.clip(pixels + grain, 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(target, quality=92)


def make_photos(folder: Path, count: int, size: tuple[int, int]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    sources = sorted(PRISTINE.glob("*.jpg"))
    if not sources:
        sys.exit(f"no pristine photos under {PRISTINE}")
    jobs = [(sources[i % len(sources)], folder / f"photo_{i:05d}.jpg", i, size) for i in range(count)]
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(make_one, jobs))
    return [job[1] for job in jobs]


def run_child(mode: str, folder: Path, model: str | None) -> dict:
    """Runs one measurement in a fresh process; returns its seconds and its own peak RSS."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        report_path = Path(handle.name)
    command = [sys.executable, __file__, "--child", mode, "--folder", str(folder),
               "--child-report", str(report_path)] + (["--model", model] if model else [])
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{mode} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    info = json.loads(report_path.read_text())
    report_path.unlink()
    return info


def child(mode: str, folder: Path, model: str | None, report_path: Path) -> None:
    from iqs_cli.card import image_to_tensor, load_card
    from iqs_cli.decode import load_rgb

    card = load_card(model)
    files = sorted(folder.glob("*.jpg"))
    started = time.perf_counter()
    if mode == "decode":
        from concurrent.futures import ThreadPoolExecutor

        def work(path: Path) -> tuple:
            return image_to_tensor(load_rgb(path, card.input.decode_min_side), card.input).shape

        with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
            list(pool.map(work, files))
    elif mode.startswith("score"):
        from iqs_cli.cli import app

        variant = mode.partition(":")[2]  # "score:all" -> --focus-check all
        argv = ["score", str(folder), "--no-cache", "--format", "jsonl", "--quiet",
                "--output", os.devnull] + (["--model", model] if model else [])
        if variant == "no-bursts":
            argv.append("--no-bursts")
        elif variant:
            argv += ["--focus-check", variant]
        try:
            app(argv, standalone_mode=False)
        except SystemExit as exc:  # typer.Exit may surface as SystemExit
            if exc.code not in (0, None):
                raise
    elif mode == "naive":
        import onnxruntime as ort

        session = ort.InferenceSession(str(card.onnx_path), providers=["CPUExecutionProvider"])
        for path in files:
            image = Image.open(path).convert("RGB")  # full decode, no draft
            tensor = image_to_tensor(image, card.input)[None]
            session.run(None, {"image": tensor})
    seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    report_path.write_text(json.dumps({"mode": mode, "files": len(files), "seconds": seconds,
                                       "peak_rss_mib": round(peak_mib, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--width", type=int, default=6000)
    parser.add_argument("--height", type=int, default=4000)
    parser.add_argument("--folder", type=Path, default=None, help="where the test photos are made (kept for re-runs)")
    parser.add_argument("--model", default=None)
    parser.add_argument("--out", type=Path, default=None, help="folder for results.json")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-report", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--no-bursts-too", action="store_true",
                        help="also time `iqs score --no-bursts` (burst grouping's cost)")
    parser.add_argument("--focus-modes", default="", help="comma-separated --focus-check modes to time too (off,rejected,all)")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.folder, args.model, args.child_report)
        return

    folder = args.folder or Path(tempfile.gettempdir()) / f"iqs-bench-{args.count}-{args.width}x{args.height}"
    started = time.perf_counter()
    files = make_photos(folder, args.count, (args.width, args.height))
    print(f"{len(files)} photos of {args.width}x{args.height} in {folder} ({time.perf_counter() - started:.0f} s)")
    half = folder.with_name(folder.name + "-half")
    half.mkdir(exist_ok=True)
    for path in files[: len(files) // 2]:
        link = half / path.name
        if not link.exists():
            os.link(path, link)

    rows = {"decode": run_child("decode", folder, args.model),
            "score_half": run_child("score", half, args.model),
            "score": run_child("score", folder, args.model)}
    for focus in filter(None, args.focus_modes.split(",")):
        rows[f"score_focus_{focus}"] = run_child(f"score:{focus}", folder, args.model)
    if args.no_bursts_too:  # the photos are made from a few references: most form bursts
        rows["score_no_bursts"] = run_child("score:no-bursts", folder, args.model)
    if not args.skip_naive:
        rows["naive"] = run_child("naive", folder, args.model)
    n = len(files)
    report = {"count": n, "size": [args.width, args.height], "cpu_count": os.cpu_count()}
    for name, row in rows.items():
        count = n // 2 if name == "score_half" else n
        report[name] = {"photos_per_s": round(count / row["seconds"], 2), "seconds": round(row["seconds"], 2),
                        "peak_rss_mib": row["peak_rss_mib"]}
    report["score_vs_decode"] = round(report["score"]["photos_per_s"] / report["decode"]["photos_per_s"], 3)
    if "naive" in report:
        report["score_vs_naive"] = round(report["score"]["photos_per_s"] / report["naive"]["photos_per_s"], 2)
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "throughput.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
