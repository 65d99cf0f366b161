"""Exact head fits on cached features: ridge for MOS, L2 logistic for classes."""

from __future__ import annotations

import numpy as np

from training.headfit import _folds, _logistic_cv, fit_mos
from training.metrics import srcc


def test_folds_keep_groups_together():
    groups = np.repeat(np.arange(20), 2)  # two views per photo
    masks = _folds(groups, 5, seed=0)
    assert sum(m.sum() for m in masks) == 40
    for mask in masks:
        assert set(groups[mask]).isdisjoint(groups[~mask])


def test_ridge_mos_fit_ranks_held_out_rows():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((300, 50))
    quality = z[:, :3] @ np.array([1.0, -0.5, 0.3])
    mos = 100 / (1 + np.exp(-quality)) + rng.normal(0, 2, 300)
    train, test = slice(0, 200), slice(200, 300)
    fit = fit_mos(z[train], np.clip(mos[train], 0, 100), np.arange(200), (1.0, 10.0, 1e4), 5, 0)
    assert fit["lambda"] != 1e4  # a huge penalty flattens everything: CV must not choose it
    pred = z[test] @ fit["weight"] + fit["bias"]
    assert srcc(pred, mos[test]) > 0.9


def test_logistic_classes_fit():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((240, 10))
    labels = np.digitize(z[:, 0] + 0.2 * rng.standard_normal(240), [-0.5, 0.5])
    fit = _logistic_cv(z, labels, np.arange(240), (1e-3, 1e-1), 4, 0, multiclass=True)
    predicted = (z @ fit["weight"] + fit["bias"]).argmax(1)
    assert (predicted == labels).mean() > 0.8
