# Config validation, normalisation and the small input functions shared by the rules.

import json
import os
import sys

from snakemake.exceptions import WorkflowError
from snakemake.settings.types import DeploymentMethod
from snakemake.utils import validate


validate(config, schema="../schemas/config.schema.yaml")

# The stage modules live in the package boneage/ beside the Snakefile; jobs (local or on a
# cluster node) import it from there, so no install of the package itself is needed.
REPO = workflow.basedir
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (REPO, os.environ.get("PYTHONPATH", "")) if p
)
# Inside a conda env "python" is the env's; otherwise the interpreter running Snakemake.
PYTHON = (
    "python"
    if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
    else sys.executable
)
STAGE = f"{PYTHON} -m boneage"


def as_list(value, key):
    """A list from a YAML list or a comma-separated string (variants=a,b on the command line)."""
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    for name in value:
        if name not in config["models"]:
            raise WorkflowError(
                f"config key '{key}': unknown model '{name}'; defined under 'models': "
                f"{', '.join(sorted(config['models']))}"
            )
    return list(value)


VARIANTS = as_list(config["variants"], "variants")
ENSEMBLE = as_list(config["ensemble"]["variants"], "ensemble.variants")
if len(ENSEMBLE) == 1:
    raise WorkflowError("config key 'ensemble.variants': an ensemble needs two or more models")
# Every model the report shows: the variants, then ensemble members not among them.
MODELS = VARIANTS + [m for m in ENSEMBLE if m not in VARIANTS]
if not MODELS:
    raise WorkflowError("config key 'variants': name at least one model to train")

if config["data_source"] == "local":
    if not config["data_dir"]:
        raise WorkflowError(
            "config key 'data_dir' is required with data_source=local "
            "(an RSNA-layout folder: boneage-training-dataset.csv + boneage-training-dataset/)"
        )
    if not os.path.isdir(config["data_dir"]):
        raise WorkflowError(
            f"config key 'data_dir': folder not found: {os.path.abspath(config['data_dir'])}"
        )


wildcard_constraints:
    variant="|".join(sorted(config["models"], key=len, reverse=True)),


def variant_spec(name):
    """Training settings of a model: top-level epochs and image_size, then `train`, then the model."""
    model = config["models"][name]
    spec = {"epochs": config["epochs"], **config["train"]}
    spec.update({k: v for k, v in model.items() if k != "augment"})
    spec["augment"] = {**config["train"].get("augment", {}), **model.get("augment", {})}
    if spec.get("input_size") is None:
        spec["input_size"] = config["image_size"]
    return spec


def spec_json(wildcards):
    return json.dumps(variant_spec(wildcards.variant), sort_keys=True)


def local_labels(wildcards):
    """The local label csv, so that editing it re-runs the download stage."""
    if config["data_source"] == "local":
        return os.path.join(config["data_dir"], "boneage-training-dataset.csv")
    return []


def gpus(wildcards):
    return 0 if config["device"] == "cpu" else 1


def stage_thresholds():
    return " ".join(str(t) for t in config["evaluate"]["stage_thresholds_months"])
