"""Evaluation metrics (training/metrics.py): numpy and scipy only, no torch needed."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("scipy")

from iqs_training import metrics as M  # noqa: E402


def test_metrics_against_known_values():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    assert M.srcc(x, x ** 3) == pytest.approx(1.0) and M.krcc(x, -x) == pytest.approx(-1.0)
    assert M.plcc(x, x ** 3) < 0.95 < M.plcc(x, x ** 3, fit=True)
    assert np.isnan(M.srcc(x, np.ones(6)))
    assert M.rmse([1.0, 3.0], [2.0, 2.0]) == pytest.approx(1.0)
    pred, true = [0, 0, 1, 2, 2, 1], [0, 1, 1, 2, 0, 1]
    assert M.confusion(pred, true).tolist() == [[1, 0, 1], [1, 2, 0], [0, 0, 1]]
    assert M.accuracy(pred, true) == pytest.approx(4 / 6)
    # F1: rejected 2*1/(2+1+1), pending 2*2/(4+0+1), accepted 2*1/(2+1+0)
    assert M.macro_f1(pred, true) == pytest.approx(np.mean([0.5, 0.8, 2 / 3]))
