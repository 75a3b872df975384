"""The code's shape a contributor relies on: one source for every default and choice list (the config
schema), stages that talk only through files, small modules and functions, and a report that
re-runs when anything it reads changes."""

from __future__ import annotations

import ast
import dataclasses
import re

import yaml

from boneage import download
from boneage.imaging import radiograph
from boneage.imaging.crop import CROP_METHODS, RENDERINGS
from boneage.imaging.intensity import INTENSITIES
from boneage.learning import models, spec
from boneage.learning.data import Augment
from boneage.results import combine

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
    from boneage.results.estimates import STAGE_THRESHOLDS
    from boneage.results.stability import Retakes
    from boneage.results.uncertainty import Bootstrap

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
    assert list(INTENSITIES) == pre["intensity"]["enum"]
    assert list(models.ARCHS) == _props("model")["arch"]["enum"]
    assert list(spec.LOSSES) == train["loss"]["enum"]
    assert list(spec.OPTIMIZERS) == train["optimizer"]["enum"]
    assert list(spec.SELECT_EPOCHS) == train["select_epoch"]["enum"]
    assert list(combine.WEIGHTINGS) == SCHEMA["properties"]["ensemble"]["properties"]["weighting"]["enum"]
    from boneage.learning.store import RESIDENT

    assert list(RESIDENT) == SCHEMA["properties"]["data"]["properties"]["resident"]["enum"]


def _stage_modules() -> set[str]:
    """The modules a rule runs (``python -m boneage.<stage>``)."""
    text = "".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    return set(re.findall(r"python -m boneage\.(\w+)", text))


SUBPACKAGES = ("imaging", "learning", "results")  # each may import only those before it
SHARED = {"config", "files"}  # the helpers at the top that any module may use
COMMANDS = {"compare", "weights"}  # what a user runs beside the rules (python -m boneage.compare, .weights)


def _module_name(path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path) -> set[str]:
    """The boneage modules that ``path`` imports (relative or absolute, at any depth), as dotted
    names below ``boneage``: ``files``, ``learning.trainer``, ``imaging.crop``."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module == "boneage":  # from boneage import a, b: stages, helpers or subpackages
                found |= {a.name for a in node.names if a.name != "__version__"}
            elif module.startswith("boneage."):
                found |= {f"{module.removeprefix('boneage.')}.{a.name}" if module.count(".") == 1
                          and module.removeprefix("boneage.") in SUBPACKAGES else module.removeprefix("boneage.")
                          for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("boneage.") for a in node.names if a.name.startswith("boneage.")}
    return found


def _modules() -> dict[str, set[str]]:
    """Every module of the package (dotted below ``boneage``) -> the boneage modules it imports."""
    return {_module_name(path).removeprefix("boneage").removeprefix(".") or "__init__": _imports(path)
            for path in sorted(PACKAGE.rglob("*.py"))}


def test_no_stage_module_imports_another_stage():
    stages = _stage_modules() | COMMANDS
    assert {"download", "preprocess", "split", "plan", "train", "evaluate", "gradcam", "report"} <= stages
    for stage in sorted(stages):
        others = (_imports(PACKAGE / f"{stage}.py") & stages) - {stage}
        assert not others, f"stage module {stage} imports stage module(s) {sorted(others)}: move what they " \
            "share into a library module"


def test_the_top_holds_the_stages_and_the_shared_helpers_and_the_libraries_sit_in_subpackages():
    top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    rooms = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert top - SHARED == _stage_modules() | COMMANDS, \
        f"a module at boneage/'s top that no rule runs: move it into one of {SUBPACKAGES}"
    assert rooms == set(SUBPACKAGES)


def test_libraries_import_no_stage_and_subpackages_import_downwards_only():
    stages = _stage_modules() | COMMANDS
    for module, imported in _modules().items():
        if module in stages | SHARED | {"__init__"}:
            continue
        room = SUBPACKAGES.index(module.split(".")[0])
        for target in imported:
            head = target.split(".")[0]
            assert head not in stages, f"library {module} imports stage {head}"
            assert head in SUBPACKAGES or head in SHARED, f"{module} imports {target}: neither a subpackage " \
                f"nor one of {sorted(SHARED)}"
            if head in SUBPACKAGES:
                assert SUBPACKAGES.index(head) <= room, f"{module} imports {target}: {SUBPACKAGES[room]} may " \
                    f"import only from {SUBPACKAGES[:room + 1]}"


def test_the_import_graph_has_no_cycle():
    graph = _modules()

    def module_of(name):  # ``learning.trainer`` or an object in a module: ``imaging.crop.Analysis``
        while name not in graph and "." in name:
            name = name.rsplit(".", 1)[0]
        return name

    edges = {m: {module_of(t) for t in ts} - {m} for m, ts in graph.items()}
    done, on_path = set(), []

    def visit(module):
        on_path.append(module)
        for nxt in sorted(edges.get(module, ())):
            assert nxt not in on_path, "import cycle: " + " -> ".join([*on_path[on_path.index(nxt):], nxt])
            if nxt not in done:
                visit(nxt)
        on_path.pop()
        done.add(module)

    for module in sorted(edges):
        if module not in done:
            visit(module)


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
    from boneage.results.plots import FIGURES

    text = (REPO / "workflow" / "rules" / "report.smk").read_text()
    declared = re.search(r"REPORT_FIGURES = \(([^)]*)\)", text).group(1)
    assert re.findall(r'"(\w+)"', declared) == list(FIGURES)
