"""Helpers shared by the tests (fixtures stay in conftest.py).

Importable as `tests.helpers`: the repository root is on sys.path through the `pythonpath`
option in pyproject.toml's [tool.pytest.ini_options].
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

STATE_DIR = ".iqs"  # iqs_cli.journal.STATE_DIR, left out of tree()
UNPRIVILEGED_FALLBACK_ID = 65534  # nobody/nogroup on Debian-like systems


def make_photo(path: Path, size=(64, 48), brightness: int = 128, seed: int = 0, **save) -> Path:
    """A small photo-like image (gradient + noise) of the given mean brightness."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = np.linspace(-30, 30, w)[None, :, None] + np.linspace(-20, 20, h)[:, None, None]
    pixels = np.clip(brightness + base + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **save)
    return path


def build_tiny_model(folder: Path, **options) -> Path:
    """The tiny ONNX verdict model of tests/tinymodel.py (imported here on use: it needs onnx)."""
    from tests.tinymodel import build_tiny_model as build

    return build(folder, **options)


def put(path: Path, content: bytes | str | None = None) -> Path:
    """Write a file (parents made); default content names the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    content = f"bytes of {path.name}" if content is None else content
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def tree(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file (or "link:<target>" of a symlink), the journal
    folder (.iqs) left out."""
    out = {}
    for p in sorted(root.rglob("*")):
        if STATE_DIR in p.relative_to(root).parts:
            continue
        if p.is_symlink():
            out[p.relative_to(root).as_posix()] = "link:" + os.readlink(p)
        elif p.is_file():
            out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def rejected_shot(*files: Path, label: str = "rejected"):
    """A ShotResult for files[0] and its companions, labelled as given (rejected by default)."""
    from iqs_cli.result import ShotResult

    return ShotResult(path=str(files[0]), files=[str(f) for f in files], label=label, stars=1,
                      mos=20.0, probabilities={"rejected": 0.9, "pending": 0.05, "accepted": 0.05})


def run_cull(results, root, dest=None, **plan_options):
    """Plan and execute a cull under a fresh journal; (plan, report)."""
    from iqs_cli import cull
    from iqs_cli.journal import Journal

    plan = cull.plan_moves(results, root, dest, **plan_options)
    with Journal.create(root) as journal:
        report = cull.execute(plan, journal)
    return plan, report


def exiftool(*paths: Path, options=("-n", "-XMP:all", "-G1")) -> list[dict]:
    """exiftool's JSON for the paths (one dict per file, "SourceFile" included)."""
    out = subprocess.run(["exiftool", "-j", *options, *map(str, paths)], capture_output=True,
                         check=False)
    return json.loads(out.stdout.decode("utf-8"))


def unprivileged_ids() -> tuple[int, int]:
    """uid and gid of an unprivileged user: nobody's where it exists, else 65534 (an id needs
    no passwd entry to be switched to)."""
    import pwd

    try:
        entry = pwd.getpwnam("nobody")
        return entry.pw_uid, entry.pw_gid
    except KeyError:
        return UNPRIVILEGED_FALLBACK_ID, UNPRIVILEGED_FALLBACK_ID


@contextmanager
def unprivileged():
    """Run the block without root's power over permissions: as root, switch the effective
    uid/gid to an unprivileged user (and drop supplementary groups), switching back after;
    as any other user, run it as is. In-process (seteuid), so no interpreter has to be
    reachable by that user; import what the block needs before entering it."""
    if os.geteuid() != 0:
        yield
        return
    uid, gid = unprivileged_ids()
    groups, egid = os.getgroups(), os.getegid()
    os.setgroups([])
    os.setegid(gid)
    os.seteuid(uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(egid)
        os.setgroups(groups)
