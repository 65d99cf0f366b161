"""The results cache never stops scoring: a cache that cannot be made or opened, one that fails
later, and entries of the wrong shape each give one warning (once), and results as usual."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.helpers import make_photo, unprivileged
from iqs_cli.cache import FileKey, ResultCache
from iqs_cli.card import load_card
from iqs_cli.cli import app
from iqs_cli.discover import Shot
from iqs_cli.engine import ModelSession
from iqs_cli.scoring import Scorer

GOOD_PROBS = {"rejected": 0.1, "pending": 0.2, "accepted": 0.7}


@pytest.fixture
def session(tiny_model):
    return ModelSession(load_card(tiny_model))


@pytest.fixture
def shots(tmp_path) -> list[Shot]:
    paths = [make_photo(tmp_path / "photos" / f"{name}.jpg", brightness=level)
             for name, level in (("dark", 5), ("mid", 128), ("bright", 250))]
    return [Shot(primary=p, files=[p]) for p in paths]


def labels(results) -> list[tuple]:
    return [(Path(r.path).name, r.label, r.mos, r.error) for r in results]


def keeps_entries(cache: ResultCache) -> bool:
    """Whether the cache stores an entry and gives it back (False: it works as no cache)."""
    key = FileKey(b"/probe.jpg", 1, 1)
    cache.put_many([(key, {"probabilities": GOOD_PROBS, "mos": 50.0})])
    return cache.get(key) is not None


def assert_unusable(cache: ResultCache, *words: str) -> None:
    assert not keeps_entries(cache)
    warning = cache.take_warning()
    assert warning is not None and str(cache.path) in warning
    assert "scoring without it" in warning and "IQS_CACHE_DIR" in warning and "\n" not in warning
    for word in words:
        assert word in warning
    assert cache.take_warning() is None  # reported once


# ---------------------------------------------------------------------------------------------
# A cache that cannot be made or opened


@pytest.mark.parametrize("where", ["below a file", "a file itself"])
def test_a_file_in_the_way_of_the_cache_folder(tmp_path, where):
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"a regular file")
    folder = blocker / "iqs" if where == "below a file" else blocker
    cache = ResultCache(folder / "results.sqlite3", model_sha256="m")
    assert_unusable(cache, "in the way")
    key = FileKey(b"/x.jpg", 1, 1)
    assert cache.get(key) is None
    cache.put_many([(key, {"probabilities": GOOD_PROBS, "mos": 50.0})])
    assert cache.take_warning() is None and blocker.read_bytes() == b"a regular file"
    cache.close()


def test_the_default_cache_folder_below_a_file(tmp_path, monkeypatch):
    (tmp_path / "file").write_bytes(b"")
    monkeypatch.setenv("IQS_CACHE_DIR", str(tmp_path / "file" / "cache"))
    assert_unusable(ResultCache(model_sha256="m"), "in the way")


def test_no_permission_to_make_the_cache_folder(tmp_path, monkeypatch):
    def denied(self, *args, **kwargs):  # root ignores chmod, so deny it here
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", denied)
    assert_unusable(ResultCache(tmp_path / "c" / "results.sqlite3"), "Permission denied")


def test_read_only_cache_folder(user_tmp_path):
    """Run as an unprivileged user even under root (root writes into read-only folders)."""
    folder = user_tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with unprivileged():
            assert_unusable(ResultCache(folder / "results.sqlite3"))
    finally:
        folder.chmod(0o755)


@pytest.mark.parametrize("content", [b"this is not a database" * 100, bytes(range(256)) * 32],
                         ids=["text", "binary"])
def test_a_cache_file_that_is_not_a_database(tmp_path, content):
    path = tmp_path / "results.sqlite3"
    path.write_bytes(content)
    assert_unusable(ResultCache(path))
    assert path.read_bytes() == content  # left for the person to look at


def test_a_folder_in_place_of_the_cache_file(tmp_path):
    (tmp_path / "results.sqlite3").mkdir()
    assert_unusable(ResultCache(tmp_path / "results.sqlite3"))


def test_scoring_goes_on_without_a_cache(tmp_path, session, shots):
    (tmp_path / "file").write_bytes(b"")
    cache = ResultCache(tmp_path / "file" / "results.sqlite3", model_sha256=session.sha256)
    results = list(Scorer(session, cache=cache).score(shots))
    assert labels(results) == labels(Scorer(session).score(shots))
    assert [r.label for r in results] == ["rejected", "pending", "accepted"]
    assert not any(r.cached for r in results)
    assert cache.take_warning() is not None and cache.take_warning() is None


# ---------------------------------------------------------------------------------------------
# A cache that fails later


class FailingDb:
    def execute(self, *args):
        raise sqlite3.OperationalError("disk I/O error")

    def close(self):
        raise sqlite3.OperationalError("disk I/O error")


def test_a_cache_that_fails_later_warns_once(tmp_path):
    cache = ResultCache(tmp_path / "results.sqlite3", model_sha256="m")
    assert keeps_entries(cache) and cache.take_warning() is None
    real, cache._db = cache._db, FailingDb()
    key = FileKey(b"/x.jpg", 1, 1)
    assert cache.get(key) is None and not keeps_entries(cache)
    warning = cache.take_warning()
    assert "disk I/O error" in warning and str(cache.path) in warning
    assert cache.get(key) is None and cache.take_warning() is None
    real.close()


# ---------------------------------------------------------------------------------------------
# Entries of the wrong shape: a miss, re-scored and replaced


def _good(**extra) -> str:
    return json.dumps({"probabilities": GOOD_PROBS, "mos": 40.0, **extra})


BAD_ENTRIES = {
    "not JSON": "not json {",
    "a list": "[1, 2]",
    "null": "null",
    "a number": 3,
    "bytes": b"\xff\x00",
    "probabilities a number": '{"probabilities": 3}',
    "a class missing": '{"probabilities": {"rejected": 0.5}, "mos": 40}',
    "mos missing": json.dumps({"probabilities": GOOD_PROBS}),
    "mos a string": _good(mos="high"),
    "mos a boolean": _good(mos=True),
    "attributes a list": _good(attributes=[0.1]),
    "attribute a string": _good(attributes={"blur": "very"}),
    "attribute past float": _good(attributes={"blur": 10 ** 400}),
    "focus a number": _good(focus=3),
    "focus without probabilities": _good(focus={"attributes": {}}),
    "deeply nested": "[" * 100_000 + "]" * 100_000,
}


@pytest.mark.parametrize("case", sorted(BAD_ENTRIES))
def test_a_bad_entry_is_a_miss_and_is_replaced(tmp_path, session, shots, case):
    path = tmp_path / "cache" / "results.sqlite3"
    cache = ResultCache(path, model_sha256=session.sha256)
    first = list(Scorer(session, cache=cache).score(shots))
    cache.close()
    dark = FileKey.of(shots[0].primary)
    with sqlite3.connect(path) as db:
        changed = db.execute("UPDATE results SET outputs=? WHERE path=?",
                             (BAD_ENTRIES[case], dark.path)).rowcount
    assert changed == 1

    cache = ResultCache(path, model_sha256=session.sha256)
    again = list(Scorer(session, cache=cache).score(shots))
    assert labels(again) == labels(first)
    assert [r.cached for r in again] == [False, True, True]  # only the bad one re-scored
    warning = cache.take_warning()
    assert warning is not None and "scored again" in warning and str(path) in warning
    assert cache.take_warning() is None
    stored = cache.get(dark)
    assert stored is not None and stored["probabilities"] == first[0].probabilities
    cache.close()


def test_many_bad_entries_warn_once(tmp_path, session, shots):
    path = tmp_path / "results.sqlite3"
    cache = ResultCache(path, model_sha256=session.sha256)
    list(Scorer(session, cache=cache).score(shots))
    cache.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE results SET outputs='{\"probabilities\": 3}'")
    cache = ResultCache(path, model_sha256=session.sha256)
    again = list(Scorer(session, cache=cache).score(shots))
    assert not any(r.cached for r in again) and all(r.ok for r in again)
    assert cache.take_warning() is not None and cache.take_warning() is None
    cache.close()


# ---------------------------------------------------------------------------------------------
# The command line


def test_score_with_a_file_in_the_way_of_the_cache(tmp_path, tiny_model, monkeypatch):
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"")
    monkeypatch.setenv("IQS_CACHE_DIR", str(blocker / "cache"))
    make_photo(tmp_path / "photos" / "a.jpg", brightness=5)
    make_photo(tmp_path / "photos" / "b.jpg", brightness=250)
    result = CliRunner().invoke(app, ["score", str(tmp_path / "photos"), "--model",
                                      str(tiny_model), "-f", "jsonl"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert sorted(Path(r["path"]).name for r in records) == ["a.jpg", "b.jpg"]
    assert all(r["error"] is None for r in records)
    assert result.stderr.lower().count("warning") == 1, result.stderr
    assert "cache" in result.stderr
