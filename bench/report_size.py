"""Size and time of the report page (`iqs report`) for many photos (a benchmark, not a test).

Fills a folder with N photos, scores it once (cold results cache), then measures what
`iqs report` costs on the scored folder: the scoring path again (answered by the cache), the
thumbnails and the page, and the page's size in bytes, for each --thumb-size.

    python bench/report_size.py --count 2000 --out bench/out/report      # CLIVE photos, cycled
    python bench/report_size.py --count 100 --camera --out bench/out/cam # 6000 x 4000 JPEGs

--camera makes camera-sized JPEGs (pristine photos upscaled with grain, as bench/throughput.py)
to measure the thumbnail decode of real camera files; the default cycles the 696 varied CLIVE
photos (500 px) of ../shared/data, copied, so the page holds real photos' thumbnails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CLIVE = ROOT.parent / "shared" / "data" / "clive" / "images"

from iqs_cli import workflow  # noqa: E402


def clive_folder(folder: Path, count: int) -> None:
    sources = sorted(CLIVE.glob("*.jpg")) + sorted(CLIVE.glob("*.JPG"))
    if not sources:
        sys.exit(f"no photos under {CLIVE}")
    for i in range(count):
        target = folder / f"day{i // 500:02d}" / f"IMG_{i:05d}.jpg"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(sources[i % len(sources)], target)  # a hard link is walked once


def camera_folder(folder: Path, count: int) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from throughput import make_photos

    make_photos(folder, count, (6000, 4000))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--camera", action="store_true", help="6000 x 4000 JPEGs")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "report")
    parser.add_argument("--model", default=None)
    parser.add_argument("--thumb-sizes", default="256,192", help="comma-separated")
    args = parser.parse_args()
    photos = args.out / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    (camera_folder if args.camera else clive_folder)(photos, args.count)
    os.environ.setdefault("IQS_CACHE_DIR", str(args.out / "cache"))
    options = workflow.ScoreOptions(model=args.model)

    figures: dict = {"count": args.count, "camera": args.camera, "cpus": os.cpu_count()}
    started = time.perf_counter()
    workflow.report([str(photos)], options)  # fills the cache (skipped when already full)
    figures["first_scoring_s"] = round(time.perf_counter() - started, 2)
    started = time.perf_counter()
    run = workflow.report([str(photos)], options)
    figures["cached_scoring_s"] = round(time.perf_counter() - started, 2)
    figures["cached"] = sum(1 for s in run.shots if s.result.cached)
    for size in (int(s) for s in args.thumb_sizes.split(",")):
        page = args.out / f"report-{size}.html"
        started = time.perf_counter()
        workflow.write_report(run, page, thumb_size=size)
        seconds = time.perf_counter() - started
        bytes_ = page.stat().st_size
        figures[f"thumb_{size}"] = {"page_s": round(seconds, 2), "bytes": bytes_,
                                    "bytes_per_shot": bytes_ // max(1, len(run.shots)),
                                    "mb": round(bytes_ / 1e6, 1)}
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
