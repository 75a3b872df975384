"""Reading the validated Snakemake config: model lists and each variant's full training settings.

Pure Python (no third-party imports), so the Snakefile can use it when it builds the DAG.
"""

from __future__ import annotations

import glob
import os


class ConfigError(ValueError):
    """A config value that the schema cannot check (a model name that is not defined, ...)."""


FOLDS_SUFFIX = "_folds"  # <variant>_folds: the fold ensemble of a variant (split.folds)
SEEDS_SUFFIX = "_seeds"  # <variant>_seeds: the seed ensemble of a variant (repeats)
NOT_TRAINING = ("augment", "repeats", "region")  # model keys that are not plain training settings


def typed(value, schema: dict, root: dict | None = None):
    """``value`` with the strings of nested keys given on the command line turned into the numbers
    and booleans the schema asks for. Snakemake reads ``--config 'preprocess={"shards": 3}'`` with
    YAML's BaseLoader, so every scalar inside arrives as a string; a key whose schema admits a string
    keeps it. Local references (``$ref: "#/$defs/..."``, against ``root``) are followed."""
    root = schema if root is None else root
    while isinstance(schema.get("$ref"), str) and schema["$ref"].startswith("#/"):
        target = root
        for part in schema["$ref"][2:].split("/"):
            target = target.get(part, {})
        schema = target
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        extra = extra if isinstance(extra, dict) else {}
        return {k: typed(v, props.get(k, extra), root) for k, v in value.items()}
    if not isinstance(value, str):
        return value
    kinds = schema.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if "string" in kinds:
        return value
    for kind, cast in (("integer", int), ("number", float)):
        if kind in kinds:
            try:
                return cast(value)
            except ValueError:
                pass
    if "boolean" in kinds and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def model_list(config: dict, key: str, fold_ensembles: bool = False) -> list[str]:
    """Model names from a YAML list or a comma-separated string (``variants=a,b`` on the CLI);
    with ``fold_ensembles``, ``<model>_folds`` names a model's fold ensemble."""
    value = config
    for part in key.split("."):
        value = value[part]
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    for name in value:
        base = name.removesuffix(FOLDS_SUFFIX)
        if name != base and base in config["models"]:
            if not fold_ensembles:
                raise ConfigError(f"config key '{key}': '{name}' is the fold ensemble of '{base}', made only "
                                  "with cross-validation (split.folds >= 2)")
        elif name not in config["models"]:
            raise ConfigError(f"config key '{key}': unknown model '{name}'; defined under 'models': "
                              f"{', '.join(sorted(config['models']))}")
    return list(dict.fromkeys(value))


def variant_spec(config: dict, name: str) -> dict:
    """Training settings of a model: top-level ``epochs``, then ``train``, then the model's own keys.

    ``augment`` merges key by key; ``input_size`` null means the preprocessed ``image_size``;
    ``pretrained: imagenet`` reads the config's ``weights_dir`` when one is set.
    """
    model = config["models"][name]
    spec = {"epochs": config["epochs"], **config.get("train", {})}
    spec.update({k: v for k, v in model.items() if k not in NOT_TRAINING})
    spec["augment"] = {**config.get("train", {}).get("augment", {}), **model.get("augment", {})}
    if spec.get("input_size") is None:
        spec["input_size"] = config["image_size"]
    if spec.get("pretrained") == "imagenet" and config.get("weights_dir"):
        spec["pretrained"] = str(config["weights_dir"])  # the folder python -m boneage.weights wrote
    return spec


def merged(base: dict, overlay: dict) -> dict:
    """``overlay`` merged into ``base`` key by key at every depth, as Snakemake merges config files."""
    out = dict(base)
    for key, value in overlay.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def model_region(config: dict, name: str) -> str:
    """The part of the hand model ``name`` sees: its own ``region``, else ``preprocess.region``."""
    return config["models"][name].get("region") or config["preprocess"]["region"]


def repeats(config: dict, name: str) -> int:
    """How many seeds model ``name`` is trained with: its own ``repeats``, else the top-level one."""
    return int(config["models"][name].get("repeats", config.get("repeats", 1)))


def local_gpu() -> bool:
    """Whether this machine shows torch a GPU, without importing torch for every Snakemake call: a
    CUDA device node (NVIDIA) or the ROCm one (AMD), unless CUDA_VISIBLE_DEVICES hides them all."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "x").strip() in ("", "-1"):
        return False
    return bool(glob.glob("/dev/nvidia[0-9]*")) or os.path.exists("/dev/kfd")


def thread_share(most: int, cores: int, models: int) -> int:
    """Threads of each of ``models`` per-model CPU jobs on ``cores`` cores: an equal share, at least 1
    and at most ``most``, so that the jobs run side by side instead of one after another on all cores."""
    return max(1, min(most, cores // max(1, models)))
