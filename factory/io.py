"""Atomic file writes and careful JSON reading: a killed process never leaves a torn artefact behind."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from segfactory.factory.errors import InputError


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, then rename it over ``path``.

    The rename is atomic on POSIX, so readers see the old file or the new one, never half of one; a
    failing ``write`` leaves an existing ``path`` untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; artefacts get the usual permissions
        write(tmp_path)
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda p: p.write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """Read a JSON file, raising :class:`InputError` with the file name on any problem."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"{what} {path} is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{what} {path} is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None


def parse_size(text: str, what: str = "size") -> tuple[int, int]:
    """Parse ``HxW`` (height first), e.g. ``360x480`` -> (360, 480)."""
    parts = str(text).lower().replace("×", "x").split("x")
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise InputError(f"{what} {text!r} is not HxW (for example 360x480)") from None
    if h <= 0 or w <= 0:
        raise InputError(f"{what} {text!r} must be positive")
    return h, w


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_torch_file(path: str | os.PathLike, what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, quietly: any problem is one :class:`InputError` line.

    torch warns on stderr about pickle protocols and the like before failing; those warnings would precede the
    one-line error the user should see, so they are silenced here (the error says what is wrong).
    """
    import warnings

    import torch

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {path} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any unpickling problem means a file that is not ours or is damaged
        raise InputError(f"{what} {path} cannot be read: it is truncated, corrupt or not a segfactory "
                         f"{what} (segfactory files hold only tensors, numbers and strings)") from None


def check_writable(path: str | os.PathLike, what: str, *, folder: bool = False) -> None:
    """Raise :class:`InputError` unless ``path`` (a file, or with ``folder`` a folder) can be created or written.

    Called before long work, so that an unwritable ``--out`` is reported at once instead of after the job. The
    path may not exist yet: its nearest existing ancestor must be a folder in which a file can be created.
    """
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise InputError(f"{what} {path} exists and is not a folder")
    probe = path if folder else path.parent
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"{what} {path} cannot be created: {probe} is a file, not a folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".segfactory-write-check-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise InputError(f"{what} {path} cannot be written: no permission to create files in {probe} "
                         f"({e.strerror})") from None
