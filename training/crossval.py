"""The recipe's LIVE Challenge figures over several folds, on photos the heads did not see.

    python -m iqs_training.crossval --run runs/iqs-base [--folds 5] [--repeats 2] [--out report.json]

A finished run folder holds `best.pt` and its feature caches (training/features.py). With
the whole backbone frozen the model is its feature BatchNorm plus linear heads, and the heads
are solved on cached features (training/headfit.py), so the recipe can be re-run on any split
of the photos without touching an image. This script pools every photo of one dataset (default CLIVE) with a MOS from
the run's train cache (view 0 and its mirror image) and validation cache (view 0), splits the
photos into k folds (stratified by MOS, or plain random; `--repeats` different seeds) and for
each fold:

- fits the heads exactly as training does (`headfit.fit_arrays`, the config's `head_fit`
  options: penalties by inner grouped cross-validation, `class_levels`, `max_false_reject` ->
  reject_at) on the other folds' photos (both views where cached) plus the synthetic rows,
  leaving out the synthetic crops of held-out photos (the best-rated CLIVE training photos are
  synthetic references: their clean crops would show the heads the held-out photos);
- scores the held-out photos (view 0) through the model's own heads (feature BatchNorm
  included): SRCC / PLCC / KRCC / RMSE of the MOS, 3-class accuracy (argmax, as `iqs eval`),
  and the labels as `iqs` gives them (rejected only when P(rejected) >= the fold's reject_at,
  else the likelier of pending / accepted): share of the worst- and best-rated fifth rejected
  (and accepted), the labels' SRCC with MOS, their accuracy against the class labels.

The attribute head is not refit: it learns from synthetic crops only, never from CLIVE, so the
run's own head gives the defect severities that `iqs` labels use with the MOS (verdict.decide). The report (printed, and written with
--out) has every fold's figures, their mean / std (ddof 1) / min / max, and per repeat the
figures of all out-of-fold predictions pooled.

Cost: a fold is the penalty search of training, 36 L-BFGS fits of the class head over ~2700
rows, memory-bound; the fits run in the rows' span (`row_space`: ~3300 instead of 4896
coordinates, the same fits) on one thread by default. For iqs-base that is 2.5-3 minutes a
fold on a shared core of the 2-core machine.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from iqs_cli.card import ModelCard, plain_json
from iqs_cli.verdict import decide
from iqs_cli.vocabulary import CLASSES, OUTPUT_ATTRIBUTES, OUTPUT_CLASS_LOGITS, OUTPUT_MOS, InputSpec
from . import metrics as M
from .checkpoint import load_checkpoint
from .config import TrainError
from .features import FeatureStore
from .headfit import _normalized, check_linear_heads, fit_arrays, set_heads, synthetic_rows


class CrossvalError(Exception):
    """The run folder cannot be cross-validated (message says why)."""


# -- the run's caches ---------------------------------------------------------------------------


def _as_json(value):
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _matches(key: dict, cfg: dict) -> bool:
    """Whether a cache was written by this run's config (prefix model, input, attributes)."""
    cfg = _as_json(cfg)  # as the cache key was written
    prefix_model = {k: v for k, v in cfg["model"].items() if k != "mos_span"}
    if key.get("model") != prefix_model or key.get("input") != cfg["input"]:
        return False
    if key.get("attributes") != cfg["attributes"]:
        return False
    return key.get("what") != "synthetic" or key.get("synthetic") == cfg["synthetic"]


def find_caches(run: Path, cfg: dict) -> dict[str, dict]:
    """{"train" | "val" | "synthetic": {"folder", "key"}} of the run's finished caches."""
    found: dict[str, list] = {}
    for done in sorted((run / "feature_cache").glob("*/done.json")):
        key = json.loads(done.read_text(encoding="utf-8"))["key"]
        if key.get("what") in ("train", "val", "synthetic") and _matches(key, cfg):
            found.setdefault(key["what"], []).append((done.stat().st_mtime, done.parent, key))
    # Several caches of one kind (a config changed between runs): the newest one.
    return {what: {"folder": max(items, key=lambda t: t[0])[1], "key": max(items, key=lambda t: t[0])[2]}
            for what, items in found.items()}


def load_store(folder: Path) -> FeatureStore:
    """A finished cache folder as training reads it (pooled features only)."""
    if not (folder / "pooled.npy").exists():
        raise CrossvalError(f"{folder}: no pooled.npy (a cache of a partly frozen backbone; "
                            "the heads can only be refit on a fully frozen one)")
    targets = torch.load(folder / "targets.pt", weights_only=True)
    targets.setdefault("source", torch.full_like(targets["level"], -1))
    return FeatureStore(None, np.load(folder / "pooled.npy", mmap_mode="r"), targets)


def row_space(z: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """(z Q, Q) with Q [D, M] an orthonormal basis of the row space of z [M, D], when M is
    well below D; else (z, None).

    The same fits in fewer coordinates: the ridge (kernel form) sees only z z^T, which
    z Q keeps, and every L-BFGS iterate of an L2 logistic fit started at zero lies in the span
    of its rows, where Q keeps inner products; a fit w' maps back as w = Q w'. Only the
    optimizer's stopping tests (largest gradient or step entry) are not rotation invariant,
    so a fit can stop a few iterations apart. The logistic fits cost in proportion to D."""
    if len(z) >= 0.9 * z.shape[1]:
        return z, None
    q, r = torch.linalg.qr(torch.from_numpy(z.T))
    return np.ascontiguousarray(r.numpy().T), q.numpy()


# -- folds and figures --------------------------------------------------------------------------


def assign_folds(mos: np.ndarray, k: int, seed, stratify: bool = True) -> np.ndarray:
    """Fold index per photo: with stratify, each run of k photos in MOS order spreads over the
    k folds (every fold sees the whole MOS range); else a seeded random split."""
    rng = np.random.default_rng(seed)
    n = len(mos)
    if not stratify:
        return rng.permutation(n) % k
    fold = np.empty(n, dtype=np.int64)
    order = np.argsort(mos, kind="stable")
    for start in range(0, n, k):
        block = order[start:start + k]
        fold[block] = rng.permutation(k)[:len(block)]
    return fold


def iqs_labels(probs: np.ndarray, mos: np.ndarray, attributes: np.ndarray, names: list[str],
               thresholds: dict) -> np.ndarray:
    """Labels as `iqs score` gives them (iqs_cli.verdict.decide): the fold's reject_at, made
    coherent with the MOS and the defect severities (`attributes` [N, K] named `names`; the
    run's attribute head, which learns from synthetic crops only, never from CLIVE MOS)."""
    card = ModelCard(name="crossval", version="0", input=InputSpec(), attributes=tuple(names),
                     thresholds=thresholds)
    return np.array([CLASSES.index(decide(dict(zip(CLASSES, p.tolist())), float(m),
                                          dict(zip(names, a.tolist())), card).label)
                     for p, m, a in zip(probs, mos, attributes)], dtype=np.int64)


def figures(pred_mos: np.ndarray, probs: np.ndarray, labels: np.ndarray, mos: np.ndarray,
            classes: np.ndarray) -> dict:
    """Figures of predictions on photos (MOS, class labels with -1 for none)."""
    out = {"n": int(len(mos))}
    out.update({f"mos_{k}": v for k, v in M.mos_metrics(pred_mos, mos).items() if k != "n"})
    has = classes >= 0
    out["class_n"] = int(has.sum())
    out["class_accuracy"] = M.accuracy(probs[has].argmax(1), classes[has])
    out["class_macro_f1"] = M.macro_f1(probs[has].argmax(1), classes[has])
    out["label_accuracy"] = M.accuracy(labels[has], classes[has])
    worst = mos <= np.quantile(mos, 0.2)
    best = mos >= np.quantile(mos, 0.8)
    out["worst_fifth_rejected"] = float((labels[worst] == 0).mean())
    out["best_fifth_rejected"] = float((labels[best] == 0).mean())
    out["worst_fifth_accepted"] = float((labels[worst] == 2).mean())
    out["best_fifth_accepted"] = float((labels[best] == 2).mean())
    out["label_srcc_with_mos"] = M.srcc(labels, mos)
    for i, name in enumerate(CLASSES):
        out[f"labelled_{name}"] = float((labels == i).mean())
    return out


def summarize(rows: list[dict]) -> dict:
    """mean / std (ddof 1) / min / max of each numeric figure over folds."""
    summary = {}
    for name in rows[0]:
        values = np.array([r.get(name) for r in rows], dtype=np.float64)
        values = values[np.isfinite(values)]
        if not len(values):
            continue
        summary[name] = {"mean": float(values.mean()),
                         "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                         "min": float(values.min()), "max": float(values.max())}
    return summary


# -- the cross-validation -----------------------------------------------------------------------


def crossval(run: Path, folds: int = 5, repeats: int = 2, seed: int = 0, split: str = "mos",
             dataset: str = "clive", progress: bool = True) -> dict:
    started = time.perf_counter()
    run = Path(run)
    if folds < 2 or repeats < 1:
        raise CrossvalError("--folds must be >= 2 and --repeats >= 1")
    if split not in ("mos", "random"):
        raise CrossvalError(f"--split must be mos or random, got {split!r}")
    model, state = load_checkpoint(run / "best.pt")
    try:
        check_linear_heads(model)
    except ValueError as exc:
        raise CrossvalError(str(exc)) from exc
    cfg = state["train_config"]
    options = {k: v for k, v in cfg["head_fit"].items() if v is not None and k != "enabled"}
    fit_seed = int(cfg["seed"])  # inner folds as training draws them
    caches = find_caches(run, cfg)
    if "train" not in caches and "val" not in caches:
        raise CrossvalError(f"{run}/feature_cache holds no finished train or val cache of this "
                            "run's config")
    if cfg["synthetic"]["enabled"] and "synthetic" not in caches:
        raise CrossvalError(f"{run}/feature_cache holds no finished synthetic cache, which the "
                            "recipe fits its heads on")

    # Photos of `dataset` with a MOS: rows of each (train: every view), its view-0 row.
    parts, photo_rows, photo_view0, photo_mos, photo_class, photo_path = [], [], [], [], [], []
    offset, counts = 0, {}
    for what in ("train", "val"):
        if what not in caches:
            continue
        store, key = load_store(caches[what]["folder"]), caches[what]["key"]
        views = int(key.get("views", 1))
        n = len(store) // views
        names = key["datasets"]
        if dataset not in names:
            raise CrossvalError(f"dataset {dataset!r} is not in the run's data ({names})")
        mos = store.targets["mos"].numpy()[:n]
        keep = np.flatnonzero((store.targets["dataset"].numpy()[:n] == names.index(dataset)) & np.isfinite(mos))
        records = key["records"]
        paths = [str(r[0]) if isinstance(r, (list, tuple)) else str(r) for r in records]
        for i in keep:
            photo_rows.append([offset + v * n + i for v in range(views)])
            photo_view0.append(offset + i)
            photo_mos.append(float(mos[i]))
            photo_class.append(int(store.targets["label"][i]))
            photo_path.append(paths[i])
        counts[what] = len(keep)
        parts.append(store.pooled)
        offset += len(store)
    n_photos = len(photo_mos)
    if n_photos < 2 * folds:
        raise CrossvalError(f"{n_photos} {dataset} photos with a MOS: too few for {folds} folds")
    photo_mos, photo_class = np.array(photo_mos), np.array(photo_class, dtype=np.int64)
    photo_view0 = np.array(photo_view0)
    row_photo = np.concatenate([[p] * len(rows) for p, rows in enumerate(photo_rows)]).astype(np.int64)
    row_index = np.concatenate(photo_rows).astype(np.int64)

    synth = None
    if "synthetic" in caches:
        store, key = load_store(caches["synthetic"]["folder"]), caches["synthetic"]["key"]
        syn_cfg = cfg["synthetic"]
        group_size = syn_cfg["ladder_levels"] + (1 if syn_cfg["include_reference"] else 0) \
            if syn_cfg["ladder_levels"] else 1
        groups, mos, labels, _ = synthetic_rows(store, group_size, n_photos, options)
        # Which pooled photo each synthetic crop was cut from (-1: a pristine reference).
        photo_of = {path: p for p, path in enumerate(photo_path)}
        ref_photo = np.array([photo_of.get(str(path), -1) for path in key.get("references", [])] + [-1])
        source = store.targets["source"].numpy()
        synth = {"index": offset + np.arange(len(store)), "groups": groups, "mos": mos,
                 "labels": labels, "photo": ref_photo[source],  # source -1 -> the trailing -1
                 # rows no head learns from (no MOS, no class at their level): never passed
                 "used": np.isfinite(mos) | (labels >= 0)}
        parts.append(store.pooled)
        if (source < 0).all() and key.get("references"):
            print("warning: the synthetic cache predates source ids: crops of held-out photos "
                  "cannot be left out", file=sys.stderr)
    pooled = np.concatenate(parts)
    pooled_view0 = torch.from_numpy(np.ascontiguousarray(pooled[photo_view0], dtype=np.float32))
    fit_rows = row_index if synth is None else np.concatenate([row_index, synth["index"][synth["used"]]])
    position = np.full(len(pooled), -1)
    position[fit_rows] = np.arange(len(fit_rows))
    z = _normalized(model, pooled[fit_rows])  # what the heads see: the model's feature BatchNorm
    del pooled
    z, basis = row_space(z)
    accept_at = cfg.get("thresholds", {}).get("accept_at")
    card_thresholds = dict(cfg.get("thresholds", {}))  # stars and reason, as export writes them

    fold_rows, pooled_rows = [], []
    for repeat in range(repeats):
        fold_of = assign_folds(photo_mos, folds, [seed, repeat], stratify=split == "mos")
        oof_mos, oof_probs, oof_labels = np.zeros(n_photos), np.zeros((n_photos, 3)), np.zeros(n_photos, np.int64)
        for f in range(folds):
            t0 = time.perf_counter()
            held = fold_of == f
            clive = ~held[row_photo]
            index, groups = [row_index[clive]], [row_photo[clive]]
            mos, labels = [photo_mos[row_photo[clive]]], [photo_class[row_photo[clive]]]
            excluded = 0
            if synth is not None:
                keep = (synth["photo"] < 0) | ~held[np.maximum(synth["photo"], 0)]
                excluded = int((~keep).sum())
                keep &= synth["used"]
                index.append(synth["index"][keep])
                groups.append(synth["groups"][keep])
                mos.append(synth["mos"][keep])
                labels.append(synth["labels"][keep])
            fits, report = fit_arrays(z[position[np.concatenate(index)]], np.concatenate(groups),
                                      np.concatenate(mos), np.concatenate(labels), None, options,
                                      fit_seed, model.mos_span)
            if "mos" not in fits or "classes" not in fits:
                raise CrossvalError(f"fold {f + 1}: the MOS or class head could not be fit "
                                    f"(heads fit: {sorted(fits)})")
            if basis is not None:  # back to feature coordinates
                for fit in fits.values():
                    fit["weight"] = basis @ fit["weight"]
            net = copy.deepcopy(model).eval()
            set_heads(net, fits)
            with torch.no_grad():
                out = net.heads(pooled_view0[held])
            pred_mos = out[OUTPUT_MOS].double().numpy()
            probs = torch.softmax(out[OUTPUT_CLASS_LOGITS].double(), 1).numpy()
            reject_at = report["classes"].get("reject_at")
            labels_iqs = iqs_labels(probs, pred_mos, out[OUTPUT_ATTRIBUTES].double().numpy(),
                                    list(state.get("attributes", [])),
                                    {**card_thresholds, "reject_at": reject_at, "accept_at": accept_at})
            oof_mos[held], oof_probs[held], oof_labels[held] = pred_mos, probs, labels_iqs
            row = {"repeat": repeat, "fold": f,
                   **figures(pred_mos, probs, labels_iqs, photo_mos[held], photo_class[held]),
                   "reject_at": reject_at,
                   "oof_accepted_rejected": report["classes"].get("oof_accepted_rejected"),
                   "oof_rejected_caught": report["classes"].get("oof_rejected_caught"),
                   "mos_lambda": report["mos"]["lambda"], "class_lambda": report["classes"]["lambda"],
                   "fit_rows": int(sum(len(i) for i in index)), "synthetic_rows_left_out": excluded,
                   "seconds": round(time.perf_counter() - t0, 2)}
            fold_rows.append(row)
            if progress:
                print(f"repeat {repeat + 1}/{repeats} fold {f + 1}/{folds}: n {row['n']}, "
                      f"SRCC {row['mos_srcc']:.4f}, PLCC {row['mos_plcc']:.4f}, "
                      f"accuracy {row['class_accuracy']:.3f}, reject_at {reject_at}, "
                      f"worst fifth rejected {row['worst_fifth_rejected']:.3f}, "
                      f"best fifth rejected {row['best_fifth_rejected']:.3f}, "
                      f"label SRCC {row['label_srcc_with_mos']:.4f} ({row['seconds']} s)",
                      file=sys.stderr, flush=True)
        pooled_rows.append({"repeat": repeat, **figures(oof_mos, oof_probs, oof_labels, photo_mos, photo_class)})

    per_fold = [{k: v for k, v in r.items() if k not in ("repeat", "fold")} for r in fold_rows]
    return plain_json({
        "run": str(run), "checkpoint": str(run / "best.pt"),
        "checkpoint_heads_fit": "head_fit" in state, "dataset": dataset,
        "photos": n_photos, "photos_from": counts, "folds": folds, "repeats": repeats,
        "split": "stratified by MOS" if split == "mos" else "random", "seed": seed,
        "head_fit": options, "inner_seed": fit_seed,
        "caches": {what: Path(c["folder"]).name for what, c in caches.items()},
        "synthetic_rows": 0 if synth is None else len(synth["index"]),
        "summary": summarize(per_fold),
        "pooled_out_of_fold": pooled_rows,
        "per_fold": fold_rows,
        "seconds": round(time.perf_counter() - started, 1),
    })


MAIN_FIGURES = ("mos_srcc", "mos_plcc", "class_accuracy", "label_accuracy", "worst_fifth_rejected",
                "best_fifth_rejected", "label_srcc_with_mos", "reject_at")


def format_summary(report: dict) -> str:
    lines = [f"{report['dataset']}: {report['photos']} photos {report['photos_from']}, "
             f"{report['folds']} folds x {report['repeats']} repeats ({report['split']}), "
             f"{report['seconds']} s",
             f"{'figure':24} {'mean':>8} {'std':>8} {'min':>8} {'max':>8}"]
    for name in MAIN_FIGURES:
        s = report["summary"].get(name)
        if s:
            lines.append(f"{name:24} {s['mean']:8.4f} {s['std']:8.4f} {s['min']:8.4f} {s['max']:8.4f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iqs_training.crossval", description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="finished run folder (best.pt, feature_cache/)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2, help="fold splits, each with its own seed")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fold splits")
    parser.add_argument("--split", choices=("mos", "random"), default="mos",
                        help="folds stratified by MOS (default) or plain random")
    parser.add_argument("--dataset", default="clive", help="dataset whose photos are pooled")
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: the fits are memory-bound, and more "
                             "threads than free cores slow them down many times)")
    parser.add_argument("--quiet", action="store_true", help="no per-fold lines")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    try:
        report = crossval(args.run, args.folds, args.repeats, args.seed, args.split, args.dataset,
                          progress=not args.quiet)
    except (CrossvalError, TrainError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(report))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        print(f"report written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
