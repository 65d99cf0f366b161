from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]  # tests of this file's own summary hook

TESTS = Path(__file__).resolve().parent
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
    from tests.helpers import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture
def user_tmp_path():
    """A fresh folder an unprivileged user can reach (pytest's own tmp tree is root-only when
    the tests run as root), owned by the user tests.helpers.unprivileged() switches to;
    removed after. For the permission tests."""
    from tests.helpers import unprivileged_ids

    folder = Path(tempfile.mkdtemp(prefix="iqs-test-"))
    try:
        if os.geteuid() == 0:
            unreachable = [p for p in folder.parents if not os.stat(p).st_mode & 0o001]
            if unreachable:
                pytest.skip(f"the temporary folder is under {unreachable[0]}, which only its owner "
                            "may enter: no unprivileged user could reach the test files")
            os.chown(folder, *unprivileged_ids())
        folder.chmod(0o755)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own results cache and personal models folder (never the user's)."""
    monkeypatch.setenv("IQS_CACHE_DIR", str(tmp_path / "iqs-cache"))
    monkeypatch.setenv("IQS_CONFIG_DIR", str(tmp_path / "iqs-config"))

