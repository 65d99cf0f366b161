"""The style proxy set (training/style_report.py): every look made and scored like `iqs score`."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("scipy")
pytest.importorskip("torch")

from iqs_training import style_report  # noqa: E402
from iqs_training.datasets import styles  # noqa: E402


def test_proxy_set_holds_every_look_and_is_scored(tmp_path, tiny_model):
    rng = np.random.default_rng(0)
    refs = []
    for i in range(2):
        path = tmp_path / f"ref{i}.png"
        pixels = 40 + 30 * rng.random((60, 80, 3))  # mean 55: the tiny model says pending
        Image.fromarray(pixels.astype(np.uint8)).save(path)
        refs.append(path)
    out = tmp_path / "proxy"
    out.mkdir()
    looks = style_report.make_proxy_set(refs, out, draws=1)
    assert set(looks) == {"reference", "shallow_focus+monochrome", *styles.STYLES, *styles.TWINS}
    assert all(len(paths) == 2 for paths in looks.values())
    report = style_report.score_looks(tiny_model, looks, focus="rejected")
    # The tiny model rejects dark images: a frame darkened to 8-25 % is rejected, and every
    # rejected shot names a reason; the mid-grey references are not rejected.
    assert report["darkened"]["rejected"] == 1.0
    assert report["reference"]["rejected"] == 0.0
    assert all(entry["rejected_without_reason"] == 0 and entry["errors"] == 0
               for entry in report.values())
