from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest_plugins = ["pytester"]  # tests of this file's own summary hook

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
SHARED_DATA = TESTS.parent.parent / "shared" / "data"
NO_SHARED_DATA = "../shared/data is not beside this checkout"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(NO_SHARED_DATA)
    return SHARED_DATA


def pytest_terminal_summary(terminalreporter):
    """Say in the summary (not only with -rs) when tests were skipped for want of the small
    fixtures in ../shared/data, and where they come from."""
    skipped = [r for r in terminalreporter.stats.get("skipped", [])
               if NO_SHARED_DATA in str(getattr(r, "longrepr", ""))]
    if skipped:
        terminalreporter.write_line(
            f"{len(skipped)} tests skipped: {NO_SHARED_DATA} (the repository's sibling folder "
            "shared/data holds small samples of the public datasets and RAW files; clone it "
            "beside this checkout to run them)")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from tinymodel import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own results cache (never the user's)."""
    monkeypatch.setenv("IQS_CACHE_DIR", str(tmp_path / "iqs-cache"))


def make_photo(path: Path, size=(64, 48), brightness: int = 128, seed: int = 0, **save) -> Path:
    """A small photo-like image (gradient + noise) of the given mean brightness."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = np.linspace(-30, 30, w)[None, :, None] + np.linspace(-20, 20, h)[:, None, None]
    pixels = np.clip(brightness + base + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **save)
    return path
