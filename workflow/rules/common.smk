# Config validation, normalisation and the small input functions shared by the rules.

import json
import math
import os
import shlex
import sys

import jsonschema
import yaml

from snakemake.exceptions import WorkflowError
from snakemake.settings.types import DeploymentMethod
from snakemake.utils import validate

SCHEMA = os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml")
# Snakemake's own message for a bad config appends the whole schema (hundreds of lines), which buries
# the one line that matters; check first and say that line, naming the key.
sys.path.insert(0, workflow.basedir)  # the package boneage/ beside the Snakefile
from boneage.config import typed

with open(SCHEMA) as f:
    _schema = yaml.safe_load(f)
config.update(
    typed(dict(config), _schema)
)  # nested keys given with --config arrive as strings
_error = jsonschema.exceptions.best_match(
    jsonschema.Draft202012Validator(_schema).iter_errors(config)
)
if _error is not None:
    _key = ".".join(str(p) for p in _error.absolute_path)
    raise WorkflowError(
        f"config{f' key {_key!r}' if _key else ''}: {_error.message}. Every key, with its type and "
        "default: workflow/schemas/config.schema.yaml"
    )
validate(config, schema=SCHEMA)  # fills in the defaults

# The stage modules live in the package boneage/ beside the Snakefile; jobs (local or on a
# cluster node) import it from there, so no install of the package itself is needed.
REPO = workflow.basedir
os.environ.update(
    PYTHONPATH=os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)
)
sys.path.insert(0, REPO)
# Rules call "python -m boneage.<stage>". Inside a conda env that is the env's python; otherwise
# it must be the interpreter running Snakemake (the project's venv), also when not activated.
if DeploymentMethod.CONDA not in workflow.deployment_settings.deployment_method:
    os.environ.update(
        PATH=os.pathsep.join(
            (os.path.dirname(sys.executable), os.environ.get("PATH", ""))
        )
    )

from boneage.config import (
    FOLDS_SUFFIX,
    SEEDS_SUFFIX,
    ConfigError,
    local_gpu,
    model_list,
    model_region,
    repeats,
    thread_share,
    variant_spec,
)
from boneage.imaging.layout import LayoutError, listing_sha256, resolve_layout

# K-fold cross-validation (split.folds): K fold models per trained model, and its fold ensemble.
FOLDS = config["split"]["folds"]
if FOLDS == 1:
    raise WorkflowError(
        "config key 'split.folds': 1 fold is no cross-validation; use 0 (off) or 2 or more"
    )
if config["split"]["folds_file"] and not FOLDS:
    raise WorkflowError(
        "config key 'split.folds_file' is set, but split.folds is 0: set the number of folds"
    )
for _name in config["models"]:
    if _name.endswith((FOLDS_SUFFIX, SEEDS_SUFFIX)):
        raise WorkflowError(
            f"config key 'models.{_name}': names ending in {FOLDS_SUFFIX!r} or {SEEDS_SUFFIX!r} are kept "
            "for fold and seed ensembles"
        )
try:
    VARIANTS = model_list(config, "variants")
    ENSEMBLE = model_list(config, "ensemble.variants", fold_ensembles=FOLDS > 0)
except ConfigError as exc:
    raise WorkflowError(str(exc))
if len(ENSEMBLE) == 1:
    raise WorkflowError(
        "config key 'ensemble.variants': an ensemble needs two or more models"
    )
# Every model trained and shown: the variants, then ensemble members (or those whose fold
# ensemble is a member) not among them.
MODELS = list(
    dict.fromkeys(VARIANTS + [m.removesuffix(FOLDS_SUFFIX) for m in ENSEMBLE])
)
if not MODELS:
    raise WorkflowError("config key 'variants': name at least one model to train")
# The fold ensembles (results/evaluate/<model>_folds/), one per trained model when folds are on.
FOLD_ENSEMBLES = [f"{m}{FOLDS_SUFFIX}" for m in MODELS] if FOLDS else []
# Seeds (repeats): each model with N > 1 gets N-1 seed models and its seed ensemble <model>_seeds.
REPEATS = {m: repeats(config, m) for m in MODELS}
SEED_ENSEMBLES = [f"{m}{SEEDS_SUFFIX}" for m in MODELS if REPEATS[m] > 1]
# The models made from others (fold and seed ensembles): evaluated by their own stage, in the report.
COMBINED = FOLD_ENSEMBLES + SEED_ENSEMBLES

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


# device=cuda on a machine without a GPU: stop when the run starts, not after preprocessing at the
# first training job. Only for local runs (on a cluster the jobs run on other nodes); a dry run
# (-n) plans without looking for a GPU, since Snakemake runs onstart only when it executes jobs.
def check_device():
    if config["device"] == "cuda" and workflow.local_exec:
        import torch

        if not torch.cuda.is_available():
            raise WorkflowError(
                "config key 'device': cuda was asked for, but torch sees no CUDA GPU on this machine; "
                "use device=auto (CUDA when available) or device=cpu"
            )


_NAMES = "|".join(sorted(config["models"], key=len, reverse=True))


# {model}: a variant's model (results/models/resnet18), one of its fold models (resnet18/fold0) or
# one of its seed models (resnet18/seed1: trained with the variant's seed + 1).
wildcard_constraints:
    variant=_NAMES,
    model=f"(?:{_NAMES})(?:/(?:fold|seed)[0-9]+)?",


def spec_json(wildcards):
    return json.dumps(variant_spec(config, wildcards.variant), sort_keys=True)


def model_variant(wildcards):
    """The variant of a model: resnet18 for resnet18 and resnet18/fold0 (wildcard model), or the
    wildcard variant itself."""
    if hasattr(wildcards, "variant"):
        return wildcards.variant
    return wildcards.model.split("/")[0]


def disk_hint():
    """After a failed run, say so when the filesystem of results/ is (nearly) full: a job that failed
    for want of space may not even have been able to write its log."""
    import shutil

    folder = "results" if os.path.isdir("results") else "."
    usage = shutil.disk_usage(folder)
    if usage.free < max(50e6, 0.01 * usage.total):
        print(
            f"The filesystem of {os.path.abspath(folder)} has {usage.free / 1e6:.1f} MB free: a job may have "
            "failed for want of space (its log may then be empty). Free space or move results/ elsewhere, then "
            "run the same command again: the failed jobs re-run, the finished ones are kept.",
            file=sys.stderr,
        )


def train_runtime(wildcards, attempt):
    """Minutes a training job asks a cluster for, times its attempt: the model's time budget with room
    for start-up, loading and export (1.25 x + 10), else train_runtime_minutes."""
    budget = (
        variant_spec(config, model_variant(wildcards)).get("time_budget_minutes") or 0
    )
    minutes = (
        math.ceil(1.25 * budget + 10) if budget else config["train_runtime_minutes"]
    )
    return minutes * attempt


def model_spec(wildcards):
    return f"results/models/{model_variant(wildcards)}/spec.json"


# The parts of the hand that models see besides preprocess.region: one preprocess_view each.
VIEW_REGIONS = sorted(
    {model_region(config, m) for m in MODELS} - {config["preprocess"]["region"]}
)


def model_images(wildcards):
    """The folder of a model's images: the preprocess stage's when its variant sees the run's
    region, else its region's view (rule preprocess_view)."""
    region = model_region(config, model_variant(wildcards))
    return (
        "results/preprocess"
        if region not in VIEW_REGIONS
        else f"results/preprocess/views/{region}"
    )


def model_store(wildcards):
    """The image store of a model's variant (wildcard variant or model)."""
    return f"{model_images(wildcards)}/images.u8"


def model_preprocessing(wildcards):
    """The preprocess summary of a model's images (settings and region), for cards and bundles."""
    return f"{model_images(wildcards)}/preprocess_summary.json"


def model_split(wildcards):
    """The split file a model is trained and evaluated on: a fold model's holds its fold out."""
    member = wildcards.model.partition("/")[2]
    if member.startswith("fold"):
        return f"results/split/folds/{member}.csv"
    return "results/split/split.csv"


def seed_offset(wildcards):
    """What a model adds to its variant's seed: k for a seed model <variant>/seed<k>, else 0."""
    member = wildcards.model.partition("/")[2]
    return int(member.removeprefix("seed")) if member.startswith("seed") else 0


def fold_models(variant):
    return [f"{variant}/fold{k}" for k in range(FOLDS)]


def seed_models(variant):
    """The extra seed models of a variant (repeats N: seed1 .. seed<N-1>)."""
    return [f"{variant}/seed{k}" for k in range(1, REPEATS.get(variant, 1))]


def group_models(wildcards):
    """The models a fold or seed ensemble ({variant}_{group}) averages; the variant itself is a
    seed ensemble's seed 0."""
    if wildcards.group == "folds":
        return fold_models(wildcards.variant)
    return [wildcards.variant, *seed_models(wildcards.variant)]


def group_member_names(wildcards):
    """The names of a fold or seed ensemble's models in its bundle: fold<k>, or seed<k> (seed0: the variant)."""
    names = [m.partition("/")[2] for m in group_models(wildcards)]
    return [name or "seed0" for name in names]


def group_files(pattern):
    """Input function: ``pattern`` (with {model}) for each model of the job's {variant}_{group}."""
    return lambda wildcards: expand(pattern, model=group_models(wildcards))


def fold_files(pattern):
    """Input function: ``pattern`` (with {model}) for each fold model of the job's {variant}."""
    return lambda wildcards: expand(pattern, model=fold_models(wildcards.variant))


def trained_models():
    """Every model a training job makes: the variants, their fold and their seed models."""
    return [m2 for m in MODELS for m2 in (m, *fold_models(m), *seed_models(m))]


def local_labels(wildcards):
    """The local label csv, so that editing it re-runs the download stage."""
    if config["data_source"] == "local":
        return os.path.join(config["data_dir"], "boneage-training-dataset.csv")
    return []


def local_images(wildcards):
    """Signature of the local image folder (names, sizes, modification times), a parameter of the
    download rule: adding, removing, replacing or editing an image re-runs download and what follows.
    """
    if config["data_source"] != "local":
        return ""
    try:
        return listing_sha256(
            resolve_layout(config["data_dir"]).image_dir, mtimes=True
        )[0]
    except (LayoutError, OSError):
        return ""  # the download job names what is missing


def gpus(wildcards):
    """GPUs a training or evaluation job asks for: none with device=cpu, or with device=auto on a
    machine without one (the jobs then run side by side: model_threads); on a cluster device=auto
    asks one, since the jobs run on other nodes."""
    if config["device"] == "cpu":
        return 0
    if config["device"] == "auto" and workflow.local_exec and not local_gpu():
        return 0
    return 1


def model_threads(most):
    """Threads of a per-model job (train, evaluate, Grad-CAM): ``most``, or, where the run's cores
    (--cores, at most this machine's) are fewer than ``most`` for each trained model and the jobs run
    on the CPU, an equal share of them, so that the models' jobs run side by side instead of one
    after another on all cores (the demo's two models on 2 cores: one thread each; a small network
    gains more from a second job than from a second thread: docs/benchmarks.md, "The demo pipeline").
    On a cluster (no --cores) and for GPU jobs (one GPU at a time): ``most``."""

    def threads(wildcards):
        try:
            cores = workflow.cores
        except WorkflowError:
            return most
        if not workflow.local_exec or not cores or gpus(wildcards):
            return most
        return thread_share(
            most, min(cores, len(os.sched_getaffinity(0))), len(trained_models())
        )

    return threads


def stage_thresholds():
    return " ".join(str(t) for t in config["evaluate"]["stage_thresholds_months"])


def bootstrap_args():
    """The bootstrap settings of every stage that scores predictions (boneage/results/uncertainty.py)."""
    e = config["evaluate"]
    return f"--bootstrap-resamples {e['bootstrap_resamples']} --bootstrap-seed {e['bootstrap_seed']}"


SHARDS = config["preprocess"]["shards"]
# Where training and evaluation keep the images (boneage/learning/store.py); a resource, not a param: it
# changes the memory a job takes, not its result (host and disk read the same bytes).
RESIDENT = config["data"]["resident"]


def preprocess_args():
    """The preprocessing settings, as the preprocess stage's options (one param: editing any
    re-runs preprocess and after)."""
    p = config["preprocess"]
    return " ".join(
        [
            f"--image-size {config['image_size']} --crop-method {p['crop_method']}",
            f"--crop-margin {p['crop_margin']} --region {p['region']} --placement {p['placement']}",
            f"--intensity {p['intensity']}",
            "--mediapipe-renderings " + " ".join(p["mediapipe_renderings"]),
            "" if p["remove_markers"] else "--keep-markers",
            "" if p["hand_check"] else "--no-hand-check",
            f"--hand-model {shlex.quote(p['hand_model'])}" if p["hand_model"] else "",
            f"--clahe-clip-limit {p['clahe_clip_limit']} --clahe-tile-grid {p['clahe_tile_grid']}",
        ]
    )


def stability_args():
    """The test-retest retakes of evaluation and the external test (boneage/results/stability.py)."""
    e = config["evaluate"]
    return f"--stability-views {e['stability_views']} --stability-seed {e['stability_seed']}"


# An external labelled test set, predicted by every bundle (workflow/rules/predict.smk).
EXTERNAL = None
if config["external_test"]:
    try:
        EXTERNAL = resolve_layout(config["external_test"])
    except LayoutError as exc:
        raise WorkflowError(f"config key 'external_test': {exc}")

# Bundles (workflow/rules/predict.smk): one per model and fold ensemble, and the ensemble's when
# configured.
BUNDLE_NAMES = MODELS + COMBINED + (["ensemble"] if ENSEMBLE else [])
BUNDLES = [f"results/bundles/{name}" for name in BUNDLE_NAMES]


def predict_bundle():
    """The bundle folder predict uses: config predict.bundle as a model name, 'ensemble' or a
    path; by default the ensemble when configured, else the first variant."""
    name = config["predict"]["bundle"] or ("ensemble" if ENSEMBLE else MODELS[0])
    if name == "ensemble" and not ENSEMBLE:
        raise WorkflowError(
            "config key predict.bundle: 'ensemble', but ensemble.variants is empty"
        )
    if name in BUNDLE_NAMES:
        return f"results/bundles/{name}"
    if not os.path.isfile(os.path.join(name, "bundle.json")):
        raise WorkflowError(
            f"config key predict.bundle: {name!r} is neither a model name ({', '.join(MODELS + COMBINED)}), "
            "'ensemble', nor a folder with bundle.json"
        )
    return name


def calibrate_bundle_name():
    """config calibrate.bundle, or the ensemble when configured, else the first variant."""
    name = config["calibrate"]["bundle"] or ("ensemble" if ENSEMBLE else MODELS[0])
    if name not in BUNDLE_NAMES:
        raise WorkflowError(
            f"config key calibrate.bundle: {name!r} is not a bundle of this run ({', '.join(BUNDLE_NAMES)})"
        )
    return name


def calibrate_local(wildcards):
    """The local labelled films of config calibrate (their csv is an input: editing it re-runs)."""
    c = config["calibrate"]
    if not c["images"] or not c["csv"]:
        raise WorkflowError(
            "the calibrate target needs config keys calibrate.images (the local films) and calibrate.csv "
            "(id,male,boneage) in an overlay (--configfile my_calibrate.yaml), for example\n"
            "calibrate:\n  images: [local_films]\n  csv: local.csv"
        )
    return c["csv"]


def predict_inputs():
    """config predict.inputs, quoted for the shell; predict needs at least one."""
    inputs = config["predict"]["inputs"]
    return " ".join(shlex.quote(str(p)) for p in inputs)


def external_summaries():
    """The external test set's summary per bundle, for the report; none when not configured."""
    if EXTERNAL is None:
        return []
    return [f"results/external/{name}/summary.json" for name in BUNDLE_NAMES]


def external_predictions():
    """The external test set's predictions per bundle (paired comparisons); none when not configured."""
    if EXTERNAL is None:
        return []
    return [f"results/external/{name}/predictions.csv" for name in BUNDLE_NAMES]


def report_benchmarks():
    """The benchmark files of the jobs before the report, for its time-per-stage table."""
    files = [
        "results/benchmarks/download/download.tsv",
        "results/benchmarks/preprocess/preprocess.tsv",
        "results/benchmarks/split/split.tsv",
    ]
    files += [
        f"results/benchmarks/preprocess/view_{region}.tsv" for region in VIEW_REGIONS
    ]
    for rule_name in ("train", "evaluate", "gradcam"):
        files += [f"results/benchmarks/{rule_name}/{m}.tsv" for m in MODELS]
    for rule_name in ("train", "evaluate"):
        files += [
            f"results/benchmarks/{rule_name}/{f}.tsv"
            for m in MODELS
            for f in (*fold_models(m), *seed_models(m))
        ]
    files += [f"results/benchmarks/crossval/{m}.tsv" for m in FOLD_ENSEMBLES]
    files += [f"results/benchmarks/seeds/{m}.tsv" for m in SEED_ENSEMBLES]
    if ENSEMBLE:
        files.append("results/benchmarks/ensemble/ensemble.tsv")
    if EXTERNAL is not None:
        files += [f"results/benchmarks/external/{name}.tsv" for name in BUNDLE_NAMES]
    return files
