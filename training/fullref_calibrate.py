"""Calibration of the full-reference teacher (training/fullref.py) on pristine photographs.

    python -m iqs_training.fullref_calibrate [PRISTINE_DIR] [--fit]   (about 2 minutes on one core)

prints the calibration table: the mean pseudo-MOS (reference 85) per distortion type and level
over random crops of the photographs in PRISTINE_DIR (default: shared/data/pristine beside the
checkout), and with --fit the QualityMapping refitted so that those means come closest to
fullref.TARGET_QUALITY (what fullref.DEFAULT_MAPPING was made with).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .datasets.synthetic import DISTORTIONS, LEVELS, SyntheticDistortions, distort
from .fullref import (
    DEFAULT_MAPPING,
    DEFAULT_REFERENCE_MOS,
    TARGET_QUALITY,
    FullReferenceScores,
    QualityMapping,
    full_reference_scores,
)

DEFAULT_PRISTINE_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "pristine"


def calibration_rows(
    pristine_dir: Path,
    crop_size: int = 384,
    reference_short_side: int = 512,
    crops_per_cell: int = 20,
    seed: int = 0,
) -> list[dict]:
    """Full-reference scores of every distortion type at every level on crops of the pristine
    photographs: `crops_per_cell` random crops per (type, level), cycling through the photos.

    Each row: {"kind", "level", "ms_ssim", "gmsd", "delta_e"}.
    """
    suffixes = {".jpg", ".jpeg", ".png"}
    photos = sorted(p for p in Path(pristine_dir).iterdir() if p.suffix.lower() in suffixes)
    if not photos:
        raise FileNotFoundError(f"no .jpg/.png photographs in {pristine_dir}")
    source = SyntheticDistortions(
        photos, crop_size=crop_size, samples_per_epoch=1, seed=seed,
        reference_short_side=reference_short_side,
    )
    rng = np.random.default_rng(seed)
    rows = []
    for kind in DISTORTIONS:
        for level in LEVELS:
            for n in range(crops_per_cell):
                reference = source.reference_crop(n % len(photos), rng)
                scores = full_reference_scores(reference, distort(reference, kind, level, rng))
                rows.append({"kind": kind, "level": level, **scores.as_dict()})
    return rows


def _scores(row: dict) -> FullReferenceScores:
    return FullReferenceScores(row["ms_ssim"], row["gmsd"], row["delta_e"])


def calibration_table(
    rows: list[dict], mapping: QualityMapping = DEFAULT_MAPPING
) -> dict[str, list[dict[str, float]]]:
    """{type: [per level 1..5: mean "pseudo_mos" (reference 85), "ms_ssim", "gmsd", "delta_e"]}."""
    table: dict[str, list[dict[str, float]]] = {}
    for kind in dict.fromkeys(row["kind"] for row in rows):
        table[kind] = []
        for level in range(1, len(TARGET_QUALITY) + 1):
            cell = [row for row in rows if row["kind"] == kind and row["level"] == level]
            keys = ("ms_ssim", "gmsd", "delta_e")
            means = {key: float(np.mean([r[key] for r in cell])) for key in keys}
            quality = np.mean([mapping.factor(_scores(r)) for r in cell])
            table[kind].append({"pseudo_mos": float(DEFAULT_REFERENCE_MOS * quality), **means})
    return table


def fit_mapping(rows: list[dict], ms_ssim_scale: float = 0.3) -> QualityMapping:
    """The mapping whose mean quality per (type, level) cell is closest (least squares) to
    TARGET_QUALITY, MS-SSIM's scale held at `ms_ssim_scale` (see `QualityMapping`)."""
    from scipy.optimize import minimize

    cells: dict[tuple[str, int], np.ndarray] = {}
    for row in rows:
        cells.setdefault((row["kind"], row["level"]), []).append(
            (row["gmsd"], 1.0 - row["ms_ssim"], row["delta_e"])
        )
    cells = {key: np.array(values) for key, values in cells.items()}

    def loss(log_params: np.ndarray) -> float:
        gmsd_scale, delta_e_scale, delta_e_power, slope = np.exp(log_params)
        total = 0.0
        for (_, level), m in cells.items():
            index = (
                m[:, 0] / gmsd_scale
                + m[:, 1] / ms_ssim_scale
                + (m[:, 2] / delta_e_scale) ** delta_e_power
            )
            total += (np.mean(1.0 / (1.0 + index**slope)) - TARGET_QUALITY[level - 1]) ** 2
        return total

    start = DEFAULT_MAPPING
    x0 = np.log([start.gmsd_scale, start.delta_e_scale, start.delta_e_power, start.slope])
    result = minimize(loss, x0, method="Nelder-Mead", options={"maxiter": 4000, "xatol": 1e-4})
    gmsd_scale, delta_e_scale, delta_e_power, slope = (float(v) for v in np.exp(result.x))
    return QualityMapping(gmsd_scale, ms_ssim_scale, delta_e_scale, delta_e_power, slope)


def _print_table(table: dict[str, list[dict[str, float]]]) -> None:
    print(f"{'type':<22}" + "".join(f"{'L' + str(level):>7}" for level in range(1, 6)))
    for kind, cells in table.items():
        print(f"{kind:<22}" + "".join(f"{cell['pseudo_mos']:7.1f}" for cell in cells))
    means = [np.mean([cells[i]["pseudo_mos"] for cells in table.values()]) for i in range(5)]
    print(f"{'mean':<22}" + "".join(f"{m:7.1f}" for m in means))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m iqs_training.fullref_calibrate",
        description="Print the full-reference teacher's calibration table: mean pseudo-MOS "
                    "(reference 85) per distortion type and level 1-5 over crops of pristine "
                    "photographs (about 2 minutes on one core).")
    parser.add_argument("pristine_dir", nargs="?", type=Path, default=DEFAULT_PRISTINE_DIR,
                        metavar="PRISTINE_DIR",
                        help="folder of sharp, well-exposed .jpg/.png photographs "
                             f"(default: {DEFAULT_PRISTINE_DIR})")
    parser.add_argument("--fit", action="store_true",
                        help="also print the mapping refitted to these crops")
    args = parser.parse_args(argv)
    if not args.pristine_dir.is_dir():
        parser.error(f"{args.pristine_dir} is not a folder; name the folder of pristine photographs")
    calibration = calibration_rows(args.pristine_dir)
    _print_table(calibration_table(calibration))
    if args.fit:
        print("refitted:", fit_mapping(calibration))


if __name__ == "__main__":
    main()
