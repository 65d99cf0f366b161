"""Durable, never-overwriting file operations shared by every writer (sidecars, --output, the
cull, undo), the one sha256 of a file, and the words for OS errors in every message.

A rename is only on disk once its folder is fsync'd; a move never replaces an existing file;
a copy across filesystems is verified (size and sha256) before the original goes; symbolic
links stay links. Names iqs makes up (temporary files, backups) always fit the filesystem's
255-byte limit, however long the photo's own name.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import secrets
import shutil
import sys
from pathlib import Path

CHUNK = 1 << 20
NAME_MAX = 255  # bytes in one file name on ext4, XFS, btrfs, APFS, NTFS (in UTF-16 units)
TEMP_MARK = ".iqs-tmp-"  # in every temporary file name iqs makes
TEMP_TOKEN_LENGTH = 8  # characters of the varying part of a temporary file's name


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


# ---------------------------------------------------------------------------------------------
# The words for OS errors: every user-facing message about one is made here


LINK_LOOP = "symbolic link loop: the link points back at itself"


def why(exc: OSError, with_path: bool = False) -> str:
    """The operating system's words for an error, for messages; `with_path`: and the file it
    names, "Permission denied: /x/y"."""
    if with_path and exc.strerror and exc.filename:
        return f"{exc.strerror}: {exc.filename}"
    return exc.strerror or str(exc) or type(exc).__name__


def remedy(exc: OSError) -> str:
    """What the user can do about a failed write or read, in one clause."""
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "the folder or file is read-only for you: make it writable, then re-run"
    if exc.errno == errno.ENOSPC:
        return "the disk is full: free some space, then re-run"
    if exc.errno == errno.ENOENT:
        return "the file or folder disappeared meanwhile: re-run on what is there now"
    if exc.errno == errno.ENAMETOOLONG:
        return "the name is longer than the filesystem allows: rename it shorter, then re-run"
    return "check the file and folder, then re-run"


def describe_os_error(exc: OSError, action: str, then: str | None = None) -> str:
    """A failed `action` on a named path, as a sentence: "cannot ACTION (WHY); THEN", THEN
    being what happens now or what to do (default: `remedy`). For example
    `describe_os_error(exc, f"read {path}")`."""
    return f"cannot {action} ({why(exc)}); {remedy(exc) if then is None else then}"


def os_error_note(exc: OSError, action: str, *, missing: str,
                  check: str = "check its permissions", advice: str | None = None) -> str:
    """What went wrong with one path, for a record that names the path beside it: a link loop,
    `missing` (not found), "permission denied: cannot ACTION; CHECK", a folder where a file
    should be, else "cannot ACTION: WHY[; ADVICE]"."""
    if exc.errno == errno.ELOOP:
        return LINK_LOOP
    if isinstance(exc, FileNotFoundError):
        return missing
    if isinstance(exc, PermissionError):
        return f"permission denied: cannot {action}; {check}"
    if isinstance(exc, IsADirectoryError):
        return "is a folder, not a file"
    return f"cannot {action}: {why(exc)}" + (f"; {advice}" if advice else "")


# ---------------------------------------------------------------------------------------------
# Writing whole files


def write_atomic(target: Path, data: bytes | str, keep_mode_of: Path | None = None) -> None:
    """Put `data` at `target` whole or not at all: a temp file beside it (same filesystem),
    fsync'd, renamed over it, the rename made durable. `keep_mode_of`: copy that file's
    permissions. Raises OSError (the temp file is gone again, `target` unchanged)."""
    target = Path(target)
    if isinstance(data, str):
        data = data.encode("utf-8")
    tmp = None
    try:
        fd, tmp = create_temp(target)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if keep_mode_of is not None:
            try:
                shutil.copymode(keep_mode_of, tmp)
            except OSError:
                pass
        replace_durably(tmp, target)
        tmp = None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def create_temp(target: Path) -> tuple[int, Path]:
    """A new, empty temporary file beside `target` (`temp_path`, a random token), opened for
    writing: (file descriptor, path). Raises OSError."""
    for _ in range(100):
        candidate = temp_path(target, secrets.token_hex(TEMP_TOKEN_LENGTH // 2))
        try:
            fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                         | getattr(os, "O_BINARY", 0), 0o666)
        except FileExistsError:
            continue
        return fd, candidate
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(target.parent))


def fitting_name(prefix: str, name: str, suffix: str) -> str:
    """prefix + name + suffix, with the middle of `name` cut so the result fits NAME_MAX bytes.

    The start and end of `name` stay (a person still recognises it); cuts fall between
    characters, never inside one (names that are not UTF-8 keep their bytes)."""
    encoded = os.fsencode(name)
    room = NAME_MAX - len(os.fsencode(prefix + suffix))
    if len(encoded) <= room:
        return prefix + name + suffix
    keep = max(room - 1, 2)  # one byte for the "~" marking the cut
    head, tail = encoded[: keep // 2], encoded[len(encoded) - (keep - keep // 2):]
    short = _whole_chars(head, from_end=False) + "~" + _whole_chars(tail, from_end=True)
    return prefix + short + suffix


def temp_prefix(target: Path) -> Path:
    """Where temporary files for `target` are made: this prefix plus TEMP_TOKEN_LENGTH
    characters, hidden, beside it (same filesystem, for an atomic rename), and within the
    255-byte name limit however long its name (the middle of the name is cut, marked "~")."""
    name = fitting_name(".", target.name, TEMP_MARK + "0" * TEMP_TOKEN_LENGTH)
    return target.parent / name[:-TEMP_TOKEN_LENGTH]


def temp_path(target: Path, token: str) -> Path:
    """A temporary name for `target`: `.NAME.iqs-tmp-TOKEN` (TOKEN: TEMP_TOKEN_LENGTH
    characters). The same arguments always give the same name."""
    if len(token) != TEMP_TOKEN_LENGTH:
        raise ValueError(f"temporary-name token must be {TEMP_TOKEN_LENGTH} characters")
    prefix = temp_prefix(target)
    return prefix.parent / (prefix.name + token)


def _whole_chars(data: bytes, from_end: bool) -> str:
    """Decode a cut piece of a name, dropping a UTF-8 character split by the cut."""
    for trim in range(4):
        piece = data[trim:] if from_end else data[: len(data) - trim]
        try:
            piece.decode("utf-8")
        except UnicodeDecodeError:
            continue
        return os.fsdecode(piece)
    return os.fsdecode(data)  # not UTF-8 anyway: keep the bytes as they are


# ---------------------------------------------------------------------------------------------
# Moving without ever replacing


def _renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # glibc < 2.28, musl without it
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                         ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_RENAMEAT2 = _renameat2()
_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def rename_noreplace(src: Path, dst: Path) -> None:
    """os.rename that never replaces an existing `dst` (FileExistsError), atomically on Linux.

    Raises OSError(EXDEV) when src and dst are on different filesystems.
    """
    if _RENAMEAT2 is not None:
        if _RENAMEAT2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst),
                      _RENAME_NOREPLACE) == 0:
            return
        code = ctypes.get_errno()
        if code not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(code, os.strerror(code), str(src), None, str(dst))
    # Elsewhere (or a filesystem without the flag): check, then rename. Windows refuses to
    # replace on its own; on POSIX a file created in this instant could still be replaced.
    if os.path.lexists(dst):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(dst))
    os.rename(src, dst)


def sha256_file(path: Path) -> str:
    """The sha256 of a file's bytes, hex (read in CHUNK-sized pieces)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def copy_verified(src: Path, tmp: Path) -> None:
    """Copy src to a new file tmp, fsync, and check size + sha256 against the source.

    A symbolic link is copied as a link (same target text), not as the file it points to."""
    if os.path.islink(src):
        os.symlink(os.readlink(src), tmp)
        return
    digest, size = hashlib.sha256(), 0
    with open(src, "rb") as source, open(tmp, "xb") as target:
        for chunk in iter(lambda: source.read(CHUNK), b""):
            digest.update(chunk)
            size += len(chunk)
            target.write(chunk)
        target.flush()
        os.fsync(target.fileno())
    shutil.copystat(src, tmp)
    if os.path.getsize(tmp) != size or sha256_file(tmp) != digest.hexdigest():
        raise OSError(errno.EIO, "the copy does not match the original (size or sha256)", str(tmp))


def same_content(a: Path, b: Path) -> bool:
    """Whether two files (or two symbolic links) hold the same thing."""
    if os.path.islink(a) or os.path.islink(b):
        return os.path.islink(a) and os.path.islink(b) and os.readlink(a) == os.readlink(b)
    return sha256_file(a) == sha256_file(b)


def move_file(src: Path, dst: Path, tmp: Path, link_to: Path | None = None) -> None:
    """Move without ever replacing dst; across filesystems copy to `tmp` beside dst, fsync,
    verify, rename into place, then delete src.

    `link_to`: a file on dst's filesystem with the same content; across filesystems dst
    becomes a hard link to it instead of a copy (so hard links stay links)."""
    try:
        rename_noreplace(src, dst)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    try:
        if link_to is not None and _linkable(link_to, src, dst):
            os.link(link_to, tmp)
        else:
            copy_verified(src, tmp)
        rename_noreplace(tmp, dst)  # same folder as dst: same filesystem
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(dst.parent)
    os.unlink(src)
    fsync_dir(src.parent)


def _linkable(other: Path, src: Path, dst: Path) -> bool:
    try:
        there, here = os.lstat(other), os.stat(dst.parent)
        return (there.st_dev == here.st_dev and not os.path.islink(src)
                and os.path.isfile(other) and same_content(other, src))
    except OSError:
        return False


def cannot_write_in(folder: Path) -> str | None:
    """Why iqs could not create files in `folder` (None: it can), without trying."""
    if os.access(folder, os.W_OK | os.X_OK):
        return None
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except (OSError, AttributeError):
        pass
    if not os.path.isdir(folder):
        return "not a folder"
    return "permission denied"
