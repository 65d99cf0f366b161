"""Exact head fits on cached features: ridge for MOS, L2 logistic for classes."""

from __future__ import annotations

import numpy as np
import pytest

from iqs_training.headfit import REJECT_AT_GRID, _folds, _logistic_cv, choose_reject_at, fit_mos, mos_logit
from iqs_training.metrics import srcc


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


def test_out_of_fold_probabilities_come_from_heads_that_did_not_see_the_row():
    rng = np.random.default_rng(2)
    z = rng.standard_normal((120, 5))
    labels = np.digitize(z[:, 0], [-0.5, 0.5])
    fit = _logistic_cv(z, labels, np.arange(120), (1e-2,), 4, 0, multiclass=True)
    oof = fit["oof"]
    assert oof.shape == (120, 3) and np.allclose(oof.sum(1), 1.0)
    logits = z @ fit["weight"] + fit["bias"]
    in_fold = np.exp(logits - logits.max(1, keepdims=True))
    in_fold /= in_fold.sum(1, keepdims=True)
    assert (oof.argmax(1) == labels).mean() > 0.7
    # A head that saw the row is more sure of its label than the heads that did not.
    assert in_fold[np.arange(120), labels].mean() > oof[np.arange(120), labels].mean()


def test_reject_at_keeps_accepted_rows_out_of_the_bin():
    labels = np.array([2] * 100 + [0] * 100)
    p_rej = np.concatenate([np.linspace(0.0, 0.74, 100), np.linspace(0.5, 1.0, 100)])
    oof = np.stack([p_rej, 1 - p_rej, np.zeros(200)], 1)
    # The accepted rows reach 0.74: with none allowed in the bin the threshold must pass them.
    strict = choose_reject_at(oof, labels, 0.0)
    assert strict["reject_at"] == 0.75 and strict["oof_accepted_rejected"] == 0.0
    assert 0.4 < strict["oof_rejected_caught"] < 0.6
    loose = choose_reject_at(oof, labels, 0.35)
    assert loose["reject_at"] == 0.5 and loose["oof_rejected_caught"] == 1.0
    hopeless = choose_reject_at(np.stack([np.ones(200), np.zeros(200), np.zeros(200)], 1), labels, 0.0)
    assert hopeless["reject_at"] == REJECT_AT_GRID[-1]


def test_mos_logit_inverts_the_head_mapping():
    mos = np.array([1.0, 30.0, 50.0, 90.0])
    for low, high in ((0.0, 100.0), (-50.0, 150.0)):
        back = low + (high - low) / (1 + np.exp(-mos_logit(mos, (low, high))))
        assert np.allclose(back, mos)
    # The wide span is nearly linear over the scale: equal MOS steps, near-equal logit steps.
    steps = np.diff(mos_logit(np.array([10.0, 50.0, 90.0]), (-50.0, 150.0)))
    assert steps[1] == pytest.approx(steps[0], rel=0.01)
    assert np.diff(mos_logit(np.array([10.0, 50.0, 90.0])))[0] == pytest.approx(2.197, abs=1e-3)
