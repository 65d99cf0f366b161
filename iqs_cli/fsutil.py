"""Durable file changes shared by the sidecar writer and the cull: a rename is only on disk
once its folder is fsync'd."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """Flush `folder`'s entries (renames, new and removed names) to disk, where the system can."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened; os.replace is enough there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_durably(tmp: Path, target: Path) -> None:
    """Put the finished file `tmp` in place of `target` atomically (os.replace, so both must be
    on one filesystem), then make the rename itself durable."""
    os.replace(tmp, target)
    fsync_dir(target.parent)
