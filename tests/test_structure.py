"""The code's shape a contributor relies on: one source for every default and choice list (the config
schema), stages that talk only through files, small modules and functions, and a report that
re-runs when anything it reads changes."""

from __future__ import annotations

import ast
import dataclasses
import re

import yaml

from boneage import download, ensemble, models, radiograph, spec
from boneage.crop import CROP_METHODS, RENDERINGS
from boneage.data import Augment

from .conftest import REPO

SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
PACKAGE = REPO / "boneage"
MAX_MODULE_LINES = 350
MAX_FUNCTION_LINES = 60


def _props(definition: str) -> dict:
    """The properties of a schema definition (``$defs``)."""
    return SCHEMA["$defs"][definition]["properties"]


def test_training_defaults_in_code_equal_the_schema():
    train, model = _props("train_settings"), _props("model")
    top = SCHEMA["properties"]
    for f in dataclasses.fields(spec.TrainSpec):
        if f.name == "arch":
            continue
        code = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if f.name == "epochs":
            expected = top["epochs"]["default"]
        elif f.name == "input_size":  # null in the schema: the preprocessed image_size
            expected = top["image_size"]["default"]
        else:
            expected = (train.get(f.name) or model[f.name])["default"]
        assert code == expected, f"TrainSpec.{f.name} defaults to {code!r}, the schema to {expected!r}"


def test_augmentation_defaults_in_code_equal_the_schema():
    # The schema names them in each description ("Default 15.") rather than as `default:`: Snakemake
    # fills schema defaults in, and a model's own augment block would then override every key of
    # train.augment with the defaults instead of only the keys it sets.
    described = {name: re.search(r"Default (\S+?)\.?$", p["description"]).group(1)
                 for name, p in SCHEMA["$defs"]["augment"]["properties"].items()}
    assert set(described) == {f.name for f in dataclasses.fields(Augment)}
    for f in dataclasses.fields(Augment):
        assert yaml.safe_load(described[f.name]) == f.default, f"Augment.{f.name}"


def test_preprocessing_defaults_in_code_equal_the_schema():
    pre = SCHEMA["properties"]["preprocess"]["properties"]
    for f in dataclasses.fields(radiograph.Settings):
        expected = SCHEMA["properties"]["image_size"]["default"] if f.name == "image_size" else pre[f.name]["default"]
        code = list(f.default) if isinstance(f.default, tuple) else f.default
        assert code == expected, f"radiograph.Settings.{f.name} defaults to {code!r}, the schema to {expected!r}"
    assert download.KAGGLE_DATASET == SCHEMA["properties"]["kaggle"]["properties"]["dataset"]["default"]


def test_evaluation_defaults_in_code_equal_the_schema():
    from dataclasses import fields

    from boneage.calibrate import Settings as Calibration
    from boneage.estimates import STAGE_THRESHOLDS
    from boneage.stability import Retakes
    from boneage.uncertainty import Bootstrap

    evaluate = SCHEMA["properties"]["evaluate"]["properties"]
    assert Bootstrap.resamples == evaluate["bootstrap_resamples"]["default"]
    assert Bootstrap.seed == evaluate["bootstrap_seed"]["default"]
    assert list(STAGE_THRESHOLDS) == evaluate["stage_thresholds_months"]["default"]
    assert (Retakes.views, Retakes.seed) == (evaluate["stability_views"]["default"], evaluate["stability_seed"]["default"])
    calibrate = SCHEMA["properties"]["calibrate"]["properties"]
    for f in fields(Calibration):
        assert getattr(Calibration, f.name) == calibrate[f.name]["default"], f"calibrate.Settings.{f.name}"


def test_choice_lists_in_code_equal_the_schema():
    pre = SCHEMA["properties"]["preprocess"]["properties"]
    train = _props("train_settings")
    assert list(CROP_METHODS) == pre["crop_method"]["enum"]
    assert list(RENDERINGS) == pre["mediapipe_renderings"]["items"]["enum"]
    assert list(models.ARCHS) == _props("model")["arch"]["enum"]
    assert list(spec.LOSSES) == train["loss"]["enum"]
    assert list(spec.OPTIMIZERS) == train["optimizer"]["enum"]
    assert list(spec.SELECT_EPOCHS) == train["select_epoch"]["enum"]
    assert list(ensemble.WEIGHTINGS) == SCHEMA["properties"]["ensemble"]["properties"]["weighting"]["enum"]
    from boneage.store import RESIDENT

    assert list(RESIDENT) == SCHEMA["properties"]["data"]["properties"]["resident"]["enum"]


def _stage_modules() -> set[str]:
    """The modules a rule runs (``python -m boneage.<stage>``)."""
    text = "".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    return set(re.findall(r"python -m boneage\.(\w+)", text))


def _imports(path) -> set[str]:
    """Top-level boneage modules that ``path`` imports (relative or absolute), at any depth."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and path.parent == PACKAGE:
                found |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
            elif node.module and node.module.startswith("boneage."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("boneage.")}
    return found


def test_no_stage_module_imports_another_stage():
    stages = _stage_modules()
    assert {"download", "preprocess", "split", "plan", "train", "evaluate", "gradcam", "report"} <= stages
    for stage in sorted(stages):
        others = (_imports(PACKAGE / f"{stage}.py") & stages) - {stage}
        assert not others, f"stage module {stage} imports stage module(s) {sorted(others)}: move what they " \
            "share into a library module"


def test_modules_and_functions_stay_small():
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        name = path.relative_to(REPO)
        assert len(text.splitlines()) <= MAX_MODULE_LINES, f"{name}: {len(text.splitlines())} lines"
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= MAX_FUNCTION_LINES, f"{name}: {node.name} has {length} lines"


def test_report_figures_declared_by_the_rule_are_those_drawn():
    from boneage.plots import FIGURES

    text = (REPO / "workflow" / "rules" / "report.smk").read_text()
    declared = re.search(r"REPORT_FIGURES = \(([^)]*)\)", text).group(1)
    assert re.findall(r'"(\w+)"', declared) == list(FIGURES)
