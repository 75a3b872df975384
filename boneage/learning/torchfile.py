"""PyTorch files written atomically and read back checked: ``model.pt``, checkpoints, weight folders.

PyTorch reads a bit-flipped tensor without complaint (its zip records CRC-32s it does not check), so a
file saved with ``digest`` also records the sha256 of its content, and :func:`load_torch` refuses one
whose content changed since (:class:`boneage.files.TornFile`, naming the file).
"""

from __future__ import annotations

import hashlib
import io
import os

import numpy as np
import torch

from ..files import TornFile, atomic_path, first_line

DIGEST_KEY = "content_sha256"


def content_sha256(obj) -> str:
    """sha256 of what a (nested) dict of tensors, numbers, strings and lists holds, key order aside:
    equal for equal content however it was serialised."""
    h = hashlib.sha256()

    def feed(x):
        if isinstance(x, dict):
            h.update(b"{")
            for key in sorted(x, key=str):
                feed(str(key))
                feed(x[key])
            h.update(b"}")
        elif isinstance(x, (list, tuple)):
            h.update(b"[")
            for v in x:
                feed(v)
            h.update(b"]")
        elif isinstance(x, torch.Tensor):
            h.update(f"T{x.dtype}{tuple(x.shape)}".encode())
            h.update(x.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
        elif isinstance(x, np.ndarray):
            h.update(f"A{x.dtype}{x.shape}".encode())
            h.update(np.ascontiguousarray(x).tobytes())
        else:
            h.update(f"{type(x).__name__}:{x!r};".encode())

    feed(obj)
    return h.hexdigest()


def save_torch(path: str | os.PathLike, obj, digest: bool = False) -> None:
    """``torch.save(obj)`` into ``path`` atomically. PyTorch's writer turns a full disk into a
    RuntimeError without an errno; the file's own OSError is kept and raised as a WriteError. With
    ``digest`` (``obj`` a dict) the file also records :func:`content_sha256` of ``obj``, which
    :func:`load_torch` checks: PyTorch reads a bit-flipped tensor without complaint."""
    class _Sink:
        error: OSError | None = None

        def __init__(self, f):
            self.f = f

        def write(self, data):
            try:
                return self.f.write(data)
            except OSError as exc:
                self.error = exc
                raise

        def flush(self):
            self.f.flush()

    if digest:
        obj = {**obj, DIGEST_KEY: content_sha256(obj)}
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        sink = _Sink(f)
        try:
            torch.save(obj, sink)
        except RuntimeError:
            if sink.error is not None:
                raise sink.error from None
            raise


def load_torch(path: str | os.PathLike, data: bytes | None = None):
    """What :func:`save_torch` wrote at ``path`` (or its bytes ``data``), tensors on the CPU, checked
    against its recorded content digest where it has one; :class:`TornFile` names the file if it
    cannot be read or its content changed since it was written."""
    try:
        obj = torch.load(path if data is None else io.BytesIO(data), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # a torn zip archive, a bit-flipped pickle, another file type
        raise TornFile(f"{path} cannot be read ({first_line(exc)})") from exc
    if isinstance(obj, dict) and DIGEST_KEY in obj:
        recorded = obj.pop(DIGEST_KEY)
        if content_sha256(obj) != recorded:
            raise TornFile(f"{path}: its content differs from the sha256 recorded when it was written (a bit flip "
                           "or a damaged copy)")
    return obj
