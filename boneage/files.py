"""Small file helpers shared by the stages: atomic writes, hashing, JSON, logging, progress bars."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Files written through a temporary file get the mode any other new file gets (mkstemp makes 0600).
FILE_MODE = 0o666 & ~_umask()


def setup_logging(level: int = logging.INFO) -> None:
    """Log to stderr; the Snakemake rules redirect stderr to the rule's log file."""
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr, force=True)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds.

    A reader (or a resumed run after ``kill -9``) therefore sees either the old or the new file,
    never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class WriteError(OSError):
    """A file that could not be written (a full disk, a read-only folder); the message names the file
    and the space left where it was to go."""


def write_error(path: str | os.PathLike, exc: OSError) -> WriteError:
    """The :class:`WriteError` for ``exc`` raised while writing ``path``."""
    import shutil

    folder = Path(path).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = f"; {shutil.disk_usage(folder).free / 1e6:.1f} MB free on the filesystem of {folder}"
    except OSError:
        free = ""
    error = WriteError(f"could not write {path}: {exc.strerror or exc}{free}")
    error.errno = exc.errno
    return error


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """``data`` into ``path`` atomically; a failed write leaves no part of it and names the file."""
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    except WriteError:
        raise
    except OSError as exc:
        raise write_error(path, exc) from exc


def write_json(path: str | os.PathLike, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike):
    return json.loads(Path(path).read_text())


def write_table(df, path: str | os.PathLike) -> None:
    """Write a pandas frame as CSV or parquet by the file's extension, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        if path.suffix == ".parquet":
            df.to_parquet(tmp, index=False)
        else:
            df.to_csv(tmp, index=False)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def progress(iterable: Iterable, total: int | None = None, desc: str = "", unit: str = "it", leave: bool = True):
    """A tqdm progress bar on stderr that stays readable in a log file (few updates, no colours).

    In a log file it writes at most one line per 10 s: ``desc: 12%|#2 | 150/1328 [01:30<11:48, 1.66step/s]``.
    """
    from tqdm import tqdm

    interactive = sys.stderr.isatty()
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        mininterval=0.5 if interactive else 10.0,
        dynamic_ncols=interactive,
        ascii=not interactive,
        leave=leave,
    )


def usable_threads(asked: int) -> int:
    """``asked`` capped at the CPUs this process may run on: more torch threads than cores is slower."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(asked, cores))


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def keep_freed_memory() -> bool:
    """Let glibc keep freed memory for reuse instead of handing it back to the kernel at once.

    A CPU forward pass frees and allocates activations of tens of MB per layer; by default each
    one above 128 KB is an ``mmap`` that is unmapped on free, so every batch page-faults its
    memory in again (half the CPU time went to the kernel). Measured on 2 cores, EfficientNet-Lite0
    inference at 128 px, batch 128: 165 -> 526 images/s (docs/benchmarks.md). Returns whether it
    applied (glibc on Linux only; elsewhere a no-op).
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    done = [libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20), libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30),
            libc.mallopt(_M_TOP_PAD, 256 << 20)]
    return all(done)
