"""Exact linear fits in numpy: ridge regression and L2-penalized logistic regression.

Training (training/headfit.py) fits the shipped heads with these problems; `iqs learn` fits a
personal head with them at run time, where there is no torch. Both have a unique optimum:

- ridge: min |Zw + b - t|^2 + lam |w|^2, solved in kernel form (rows < features);
- logistic: min mean_i BCE(z_i . w + b, y_i) + lam |w|^2 (the objective headfit's L-BFGS
  minimizes), solved by Newton's method in the row space of Z: the optimum's w is a
  combination of the training rows (its gradient condition says so), so with Z = U S V^T the
  problem in c (w = V c) has at most as many unknowns as rows, and Newton converges in a few
  steps.
"""

from __future__ import annotations

import numpy as np


def group_folds(groups: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """k validation masks over rows, whole groups at a time."""
    unique = np.unique(groups)
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of_group = dict(zip(unique[order], np.arange(len(unique)) % k))
    fold = np.array([fold_of_group[g] for g in groups])
    return [fold == i for i in range(k)]


def stratified_folds(labels: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """k validation masks; each class is spread evenly over the folds."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=int)
    start = 0
    for value in np.unique(labels):
        rows = np.flatnonzero(labels == value)
        fold[rng.permutation(rows)] = (start + np.arange(len(rows))) % k
        start += len(rows)  # the next class starts where this one stopped: folds stay even
    return [fold == i for i in range(k)]


def ridge(z: np.ndarray, t: np.ndarray, lam: float) -> tuple[np.ndarray, float]:
    """min |Zw + b - t|^2 + lam |w|^2, in kernel form (rows < features)."""
    mean_z, mean_t = z.mean(0), t.mean()
    zc = z - mean_z
    gram = zc @ zc.T
    alpha = np.linalg.solve(gram + lam * np.eye(len(t)), t - mean_t)
    w = zc.T @ alpha
    return w, float(mean_t - mean_z @ w)


def row_basis(z: np.ndarray) -> np.ndarray:
    """An orthonormal basis [D, r] of the space Z's rows span (r <= rows)."""
    _, singular, vt = np.linalg.svd(np.asarray(z, np.float64), full_matrices=False)
    keep = singular > singular[0] * 1e-10 if singular.size else np.zeros(0, bool)
    return vt[keep].T


def _objective(x, y, c, b, lam) -> float:
    s = x @ c + b
    return float(np.mean(np.logaddexp(0.0, s) - y * s) + lam * c @ c)


def logistic_in_basis(x: np.ndarray, y: np.ndarray, lam: float,
                      start: tuple[np.ndarray, float] | None = None,
                      max_steps: int = 100, tol: float = 1e-9) -> tuple[np.ndarray, float]:
    """Newton's method for min mean BCE(x c + b, y) + lam |c|^2; x [n, r], y in [0, 1]."""
    n, r = x.shape
    if start is None:
        mean = float(np.clip(y.mean(), 1e-6, 1 - 1e-6))
        c, b = np.zeros(r), float(np.log(mean / (1 - mean)))
    else:
        c, b = start[0].copy(), float(start[1])
    current = _objective(x, y, c, b, lam)
    for _ in range(max_steps):
        p = sigmoid(x @ c + b)
        gradient = np.append(x.T @ (p - y) / n + 2 * lam * c, np.mean(p - y))
        if np.max(np.abs(gradient)) < tol:
            break
        weight = p * (1 - p) / n
        hessian = np.empty((r + 1, r + 1))
        hessian[:r, :r] = (x.T * weight) @ x
        hessian[:r, :r][np.diag_indices(r)] += 2 * lam
        hessian[:r, r] = hessian[r, :r] = x.T @ weight
        hessian[r, r] = weight.sum() + 1e-12
        step = np.linalg.solve(hessian, gradient)
        size = 1.0
        while size > 1e-6:  # backtracking: Newton's full step can overshoot far from the optimum
            trial_c, trial_b = c - size * step[:r], b - size * step[r]
            trial = _objective(x, y, trial_c, trial_b, lam)
            if trial <= current + 1e-4 * size * -(gradient @ step):
                break
            size /= 2
        c, b, change, current = trial_c, trial_b, current - trial, trial
        if change < 1e-14:
            break
    return c, b


def logistic(z: np.ndarray, y: np.ndarray, lam: float,
             basis: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """min mean_i BCE(z_i . w + b, y_i) + lam |w|^2 -> (w [D], b). `basis`: row_basis of Z or
    of any larger set of rows that holds Z's (the folds of a cross-validation share one)."""
    z = np.asarray(z, np.float64)
    basis = row_basis(z) if basis is None else basis
    c, b = logistic_in_basis(z @ basis, np.asarray(y, np.float64), lam)
    return basis @ c, b


def sigmoid(s: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(s, -60, 60)))


def lowest_threshold(keeper_scores: np.ndarray, max_rate: float, grid) -> float:
    """The lowest threshold of `grid` (ascending) at which at most `max_rate` of the keepers'
    scores reach it (a wrongly rejected keeper costs a photographer more than a bad shot left
    in); the last one when none does."""
    for threshold in grid:
        if (keeper_scores >= threshold).mean() <= max_rate:
            return threshold
    return grid[-1]


def logistic_cv(z: np.ndarray, y: np.ndarray, lambdas, folds: list[np.ndarray]) -> dict:
    """Cross-validated penalty for `logistic`: for each lambda (largest first, each fit warm
    started from the last), the out-of-fold probabilities and mean held-out log loss; then the
    fit on all rows with the best lambda. Returns {"weight", "bias", "lambda", "cv_loss"
    {lambda: loss}, "oof" (out-of-fold probabilities of the best lambda)}."""
    z = np.asarray(z, np.float64)
    y = np.asarray(y, np.float64)
    basis = row_basis(z)
    x = z @ basis  # one basis for every fold: each fold's optimum lies in it
    lambdas = sorted(lambdas, reverse=True)
    losses, oof = {}, {}
    starts: list[tuple[np.ndarray, float] | None] = [None] * len(folds)
    for lam in lambdas:
        probabilities = np.zeros(len(y))
        for index, held in enumerate(folds):
            c, b = logistic_in_basis(x[~held], y[~held], lam, start=starts[index])
            starts[index] = (c, b)
            probabilities[held] = sigmoid(x[held] @ c + b)
        clipped = np.clip(probabilities, 1e-12, 1 - 1e-12)
        losses[lam] = float(-np.mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped)))
        oof[lam] = probabilities
    best = min(losses, key=losses.get)
    c, b = logistic_in_basis(x, y, best)
    return {"weight": basis @ c, "bias": b, "lambda": best, "cv_loss": losses, "oof": oof[best]}
