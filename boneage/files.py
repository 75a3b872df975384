"""Small file helpers shared by the stages: atomic writes, hashing, JSON, logging, progress bars."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator

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


# errno values that mean "no room or no right to write here", not "this input is bad"
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


class WriteError(OSError):
    """A file that could not be written (a full disk, a read-only folder); the message names the file
    and the space left where it was to go."""


def write_error(path: str | os.PathLike, exc: OSError) -> WriteError:
    """The :class:`WriteError` for ``exc`` raised while writing ``path``."""
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


@contextmanager
def _named(path: Path) -> Iterator[None]:
    """A full disk or a read-only folder in the block: a :class:`WriteError` naming ``path``."""
    try:
        yield
    except WriteError:
        raise
    except OSError as exc:
        if exc.errno in DISK_ERRNOS:
            raise write_error(path, exc) from exc
        raise


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` only if the block succeeds.

    A reader (or a resumed run after ``kill -9``) therefore sees either the old or the new file,
    never a half-written one. A full disk (or a read-only folder) in the block is a
    :class:`WriteError` that names ``path`` and the space left.
    """
    path = Path(path)
    with _named(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with _named(path):
            yield Path(tmp)
            os.chmod(tmp, FILE_MODE)
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _exchange(a: Path, b: Path) -> bool:
    """Swap the names ``a`` and ``b`` in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    system or filesystem cannot."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; it takes the place of the folder ``path`` only if
    the block succeeds, in one step (the names are exchanged): a reader, or a run after ``kill -9``,
    sees the old folder or the new one, never a mix or none. Where the filesystem cannot exchange
    names, the old folder is renamed away first (for an instant, no folder: a clear "not found")."""
    path = Path(path)
    with _named(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        with _named(path):
            yield tmp
            os.chmod(tmp, 0o777 & ~_umask())
            if not path.exists():
                os.replace(tmp, path)
            elif not _exchange(tmp, path):  # tmp now holds the old folder, removed below
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
                os.replace(path, old / path.name)
                os.replace(tmp, path)
                tmp = old
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """``data`` into ``path`` atomically; a failed write leaves no part of it and names the file."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    """``text`` (UTF-8) into ``path`` atomically."""
    write_bytes(path, text.encode())


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """A copy of ``src`` at ``dst``, written atomically."""
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def save_npz(path: str | os.PathLike, **arrays) -> None:
    """``numpy.savez_compressed`` into ``path`` atomically."""
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type's name if it has none), for one-line errors."""
    return (str(exc).splitlines() or [type(exc).__name__])[0]


class TornFile(ValueError):
    """A file whose content is not what was written: cut short, bit-flipped or of another kind."""


def run_main(main: Callable[[], None]) -> None:
    """Run a stage's ``main``: a file it could not write (or a torn input) ends the process with one
    line naming the file and the space left (exit status 1), not a traceback."""
    try:
        main()
    except (WriteError, TornFile) as exc:
        logging.getLogger("boneage").error("%s", exc)
        sys.exit(1)


def write_json(path: str | os.PathLike, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


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


def read_table(path: str | os.PathLike, remake: str = "", **kwargs):
    """A parquet or CSV table (by the file's extension) a stage wrote; :class:`TornFile` naming the file
    (and ``remake``, the command that writes it again) if it cannot be read."""
    import pandas as pd

    path = Path(path)
    try:
        return pd.read_parquet(path, **kwargs) if path.suffix == ".parquet" else pd.read_csv(path, **kwargs)
    except FileNotFoundError:
        raise
    except (ValueError, OSError) as exc:  # pyarrow's and pandas' parse errors are ValueErrors or OSErrors
        raise TornFile(f"{path} cannot be read as a table ({first_line(exc)}): torn or damaged"
                       + (f"; write it again: {remake}" if remake else "")) from exc


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
