"""Quality metrics (numpy/scipy only): correlations with MOS and class-label scores.

SRCC/KRCC measure ranking, PLCC linearity (optionally after the 4-parameter logistic map that
IQA papers fit before PLCC and RMSE), RMSE the error in MOS points; accuracy, macro-F1 and the
confusion matrix score the 3-class head.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import optimize, stats


def _pair(pred, target) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    target = np.asarray(target, dtype=np.float64).reshape(-1)
    if pred.shape != target.shape:
        raise ValueError(f"predictions ({pred.size}) and targets ({target.size}) differ in length")
    return pred, target


def _degenerate(pred: np.ndarray, target: np.ndarray) -> bool:
    """Correlation is undefined for fewer than 2 points or a constant side."""
    return pred.size < 2 or np.ptp(pred) == 0 or np.ptp(target) == 0


def srcc(pred, target) -> float:
    pred, target = _pair(pred, target)
    if _degenerate(pred, target):
        return float("nan")
    return float(stats.spearmanr(pred, target)[0])


def krcc(pred, target) -> float:
    pred, target = _pair(pred, target)
    if _degenerate(pred, target):
        return float("nan")
    return float(stats.kendalltau(pred, target)[0])


def logistic4(x, beta1, beta2, beta3, beta4):
    """VQEG 4-parameter logistic: (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2."""
    with np.errstate(over="ignore"):
        return (beta1 - beta2) / (1.0 + np.exp(-(x - beta3) / (np.abs(beta4) + 1e-9))) + beta2


def logistic_fit(pred, target) -> np.ndarray:
    """`pred` mapped onto the target scale by the fitted 4-parameter logistic (identity-like
    fallback, a linear fit, when the fit does not converge)."""
    pred, target = _pair(pred, target)
    p0 = [target.max(), target.min(), float(np.mean(pred)), float(np.std(pred)) or 1.0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params, _ = optimize.curve_fit(logistic4, pred, target, p0=p0, maxfev=10000)
        fitted = logistic4(pred, *params)
        if np.all(np.isfinite(fitted)):
            return fitted
    except (RuntimeError, ValueError, optimize.OptimizeWarning):
        pass
    slope, intercept = np.polyfit(pred, target, 1)
    return slope * pred + intercept


def plcc(pred, target, fit: bool = False) -> float:
    pred, target = _pair(pred, target)
    if _degenerate(pred, target):
        return float("nan")
    if fit and pred.size >= 5:
        pred = logistic_fit(pred, target)
        if np.ptp(pred) == 0:
            return float("nan")
    return float(stats.pearsonr(pred, target)[0])


def rmse(pred, target, fit: bool = False) -> float:
    pred, target = _pair(pred, target)
    if pred.size == 0:
        return float("nan")
    if fit and pred.size >= 5 and not _degenerate(pred, target):
        pred = logistic_fit(pred, target)
    return float(np.sqrt(np.mean((pred - target) ** 2)))


def confusion(pred_labels, true_labels, num_classes: int = 3) -> np.ndarray:
    """Counts [true, predicted]."""
    pred, true = (np.asarray(v, dtype=np.int64).reshape(-1) for v in (pred_labels, true_labels))
    if pred.shape != true.shape:
        raise ValueError("predicted and true labels differ in length")
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (true, pred), 1)
    return matrix


def accuracy(pred_labels, true_labels) -> float:
    pred, true = (np.asarray(v).reshape(-1) for v in (pred_labels, true_labels))
    return float(np.mean(pred == true)) if pred.size else float("nan")


def macro_f1(pred_labels, true_labels, num_classes: int = 3) -> float:
    """Mean F1 over the classes present in the truth or the predictions."""
    matrix = confusion(pred_labels, true_labels, num_classes)
    scores = []
    for c in range(num_classes):
        tp = matrix[c, c]
        fp = matrix[:, c].sum() - tp
        fn = matrix[c, :].sum() - tp
        if tp + fp + fn == 0:
            continue  # class absent on both sides: no evidence either way
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else float("nan")


def mos_metrics(pred, target) -> dict:
    """SRCC, KRCC, PLCC (plain and after a logistic fit), RMSE (plain) and the count."""
    pred, target = _pair(pred, target)
    return {
        "n": int(pred.size),
        "srcc": srcc(pred, target),
        "krcc": krcc(pred, target),
        "plcc": plcc(pred, target),
        "plcc_logistic": plcc(pred, target, fit=True),
        "rmse": rmse(pred, target),
    }


def class_metrics(pred_labels, true_labels, num_classes: int = 3) -> dict:
    pred = np.asarray(pred_labels, dtype=np.int64).reshape(-1)
    true = np.asarray(true_labels, dtype=np.int64).reshape(-1)
    return {
        "n": int(true.size),
        "accuracy": accuracy(pred, true),
        "macro_f1": macro_f1(pred, true, num_classes),
        "confusion": confusion(pred, true, num_classes).tolist(),
    }
