"""File helpers shared by every layer: atomic writes and content hashes.

An atomic write goes to `<path>.tmp-<pid>-<thread>` in the same folder, is flushed and fsync'ed, then renamed over
`path`, so a crash never leaves a partial file under the final name (at worst a temporary file, whose name says
so: TMP_INFIX). Readers therefore see the old file or the new one, never a mix.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
from typing import IO, Any, Iterator

TMP_INFIX = ".tmp-"  # every temporary name written here contains it


def check_folder_path(folder: str, what: str) -> None:
    """`folder` can be a folder: it is one, or its nearest existing ancestor is a folder (not a file).

    Raises:
        ValueError: naming `what`, the path and the file that stands in the way.
    """
    current = os.path.abspath(folder)
    while not os.path.exists(current):
        parent = os.path.dirname(current)
        if parent == current:
            return
        current = parent
    if not os.path.isdir(current):
        raise ValueError(f"{what}: {folder} cannot be a folder: {current} is a file")


def temporary_name(path: str, suffix: str = "") -> str:
    """`path` + TMP_INFIX + pid and thread: unique among the processes and threads writing the same file."""
    return f"{path}{TMP_INFIX}{os.getpid()}-{threading.get_native_id()}{suffix}"


def fsync_replace(tmp: str, final: str) -> None:
    """fsync the finished file `tmp`, then rename it over `final` (atomic on POSIX within one file system)."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)


@contextlib.contextmanager
def atomic_output(path: str, binary: bool = False, suffix: str = "") -> Iterator[IO[Any]]:
    """Open a temporary file beside `path` for writing; on a clean exit it replaces `path`, on an error it is
    removed and `path` is left as it was. `suffix` ends the temporary name (some writers need an extension)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = temporary_name(path, suffix)
    try:
        with open(tmp, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json_atomic(path: str, data: Any, indent: int = 2, sort_keys: bool = False) -> None:
    """`data` as JSON (with a final newline) at `path`, atomically."""
    with atomic_output(path) as f:
        json.dump(data, f, indent=indent, sort_keys=sort_keys)
        f.write("\n")


def file_digest(path: str, algorithm: str = "sha256") -> str:
    """Hex digest of a file's content, read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str) -> str:
    """Hex SHA-256 of a file."""
    return file_digest(path, "sha256")
