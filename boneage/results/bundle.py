"""Model bundles: a trained variant, or an ensemble, as one folder that predicting needs alone.

Layout (``results/bundles/<variant>/``)::

    bundle.json        format, kind, the preprocessing settings the training images went through,
                       inference settings (TTA, hflip; box_shift: the box views each estimate is
                       the mean over), the validation-fitted bias correction and prediction
                       interval, sha256 of every weight file, test metrics
    model.pt           weights, training spec, target mean and standard deviation
    model_card.json    data, metrics and versions behind the model

An ensemble bundle (``results/bundles/ensemble/``) holds ``bundle.json`` (members, weights, its own
bias correction and interval) and a copy of each member's bundle under ``members/<name>/``; a fold
ensemble's (``results/bundles/<variant>_folds/``, split.folds) holds its fold models' bundles under
``members/fold<k>/``, a seed ensemble's (``<variant>_seeds/``, repeats) its seed models' under
``members/seed<k>/``, equally weighted. Members of an ensemble may see different parts of the hand
(``models.<name>.region``): their preprocessing differs in ``region`` alone, each member's
``bundle.json`` names its own, and :class:`Views` carries the films in each region to
:meth:`Bundle.predict`.

A calibrated bundle (``python -m boneage.calibrate``) is a copy of its parent whose ``bundle.json``
adds ``calibration`` (per sex, ``intercept + slope * estimate``, applied after everything else), the
local interval, the local set's size per sex and hash, and the parent's ``bundle.json`` hash.
Copying the folder elsewhere and predicting there gives the same numbers: nothing in it points
outside it. Loading checks the format and every weight file's sha256.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..files import read_json, sha256_bytes, sha256_file, write_json
from ..imaging.radiograph import MAX_BOX_SHIFT
from ..learning.inference import load_model, model_meta, predict
from .metrics import corrected

BUNDLE_FORMAT = "boneage-bundle-v1"


class BundleError(ValueError):
    """A folder that is not a usable bundle; the message names the file and what is wrong."""


SEXES = {"female": 0.0, "male": 1.0}


def calibrated(pred, male, calibration: dict | None) -> np.ndarray:
    """Estimates after a local calibration: per sex (``male`` 1/0) ``intercept + slope * pred``; a sex
    the calibration leaves out (``None``) keeps its estimates."""
    pred = np.asarray(pred, float)
    if not calibration:
        return pred
    male = np.asarray(male, float)
    out = pred.copy()
    for sex, value in SEXES.items():
        fit = calibration.get(sex)
        if fit:
            rows = male == value
            out[rows] = fit["intercept"] + fit["slope"] * pred[rows]
    return out


def _variant_entry(metrics: dict, model_path: Path) -> dict:
    spec = model_meta(model_path)["spec"]
    return {
        "variant": metrics["variant"], "model": {"file": "model.pt", "sha256": sha256_file(model_path)},
        "sex_input": bool(spec.get("sex_input", False)), "input_size": int(spec["input_size"]),
        "inference": {"tta": bool(metrics.get("tta", False)),
                      "hflip": bool(spec.get("augment", {}).get("hflip", False))},
    }


def _common(metrics: dict, preprocess: dict) -> dict:
    interval = metrics.get("interval") or {}
    return {
        "format": BUNDLE_FORMAT, "preprocess": preprocess,
        "bias_correction": metrics.get("bias_correction"),
        "interval": {"level": interval.get("level"), "halfwidth_months": interval.get("halfwidth_months")},
        "test_metrics": {k: metrics.get("test", {}).get(k) for k in ("n", "mae", "rmse", "r2")},
        "stability": metrics.get("stability"),
    }


def write_variant(out_dir: Path, model_path: Path, metrics_path: Path, preprocess_summary: Path,
                  card_path: Path) -> dict:
    """The bundle of one trained variant from the files its stages wrote (into a new folder: the
    writers here fill a temporary one that :func:`boneage.files.atomic_dir` then puts in place)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = read_json(metrics_path)
    shutil.copyfile(model_path, out_dir / "model.pt")
    shutil.copyfile(card_path, out_dir / "model_card.json")
    bundle = {**_common(metrics, read_json(preprocess_summary)["settings"]), "kind": "variant",
              "box_shift": float(metrics.get("box_shift", 0.0)), **_variant_entry(metrics, out_dir / "model.pt")}
    write_json(out_dir / "bundle.json", bundle)
    return bundle


def write_ensemble(out_dir: Path, members: dict[str, Path], metrics_path: Path) -> dict:
    """The ensemble's bundle: its weights and corrections, and a copy of each member's bundle."""
    metrics = read_json(metrics_path)
    for name, folder in members.items():
        shutil.copytree(folder, out_dir / "members" / name)
    return _write_ensemble_spec(out_dir, metrics["weights"], metrics)


def write_average(out_dir: Path, members: dict[str, tuple[Path, Path, Path]], preprocess_summary: Path,
                  metrics_path: Path) -> dict:
    """A fold or seed ensemble's bundle (stages crossval, seeds): each model's bundle under
    ``members/<name>`` (fold<k>, seed<k>) from its (model.pt, metrics.json, model_card.json), equal
    weights, no correction of its own."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, (model, metrics, card) in members.items():
        write_variant(out_dir / "members" / name, model, metrics, preprocess_summary, card)
    return _write_ensemble_spec(out_dir, {name: 1 / len(members) for name in members}, read_json(metrics_path))


def region(preprocess: dict) -> str:
    """The part of the hand a bundle's preprocessing keeps (bundles made before regions: the hand)."""
    return preprocess.get("region", "hand")


def _write_ensemble_spec(out_dir: Path, weights: dict[str, float], metrics: dict) -> dict:
    """``bundle.json`` of an ensemble whose member bundles are in ``out_dir/members/<name>``. A member
    that is itself an ensemble (a fold ensemble) joins with its own members, each at its share of
    the member's weight, so that loading stays one level deep. Members' preprocessing may differ in
    the region alone, and their box views not at all; the ensemble's ``preprocess`` is its first member's."""
    entries, preprocess, sex_input, shifts = [], None, False, set()
    for name, weight in weights.items():
        member = read_json(out_dir / "members" / name / "bundle.json")
        if preprocess is not None and ({**member["preprocess"], "region": None} != {**preprocess, "region": None}):
            raise BundleError(f"ensemble member {name} was trained on differently preprocessed images (other than "
                              "in the part of the hand, settings differ)")
        preprocess = preprocess or member["preprocess"]
        sex_input = sex_input or bool(member["sex_input"])
        shifts.add(float(member.get("box_shift", 0.0)))
        if len(shifts) > 1:
            raise BundleError(f"ensemble member {name} was evaluated with other box views (box_shift "
                              f"{sorted(shifts)}); evaluate all members alike")
        if member["kind"] == "ensemble":
            if member["bias_correction"] is not None:
                raise BundleError(f"ensemble member {name} is an ensemble with a correction of its own")
            entries += [{"name": f"{name}/{e['name']}", "path": f"members/{name}/{e['path']}",
                         "weight": weight * e["weight"]} for e in member["members"]]
        else:
            entries.append({"name": name, "path": f"members/{name}", "weight": weight})
    bundle = {**_common(metrics, preprocess), "kind": "ensemble", "variant": metrics["variant"], "members": entries,
              "sex_input": sex_input, "box_shift": shifts.pop()}
    write_json(out_dir / "bundle.json", bundle)
    return bundle


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _spec_problem(spec: dict) -> str | None:
    """What makes a bundle.json unusable (a key missing or of a wrong type, a member path leading out of
    the bundle), or None. bundle.json is input from elsewhere: nothing in it may point outside its folder."""
    def correction(c) -> bool:
        return c is None or (isinstance(c, dict) and _number(c.get("slope")) and _number(c.get("intercept")))

    if spec.get("kind") not in ("variant", "ensemble"):
        return f"kind {spec.get('kind')!r} is neither 'variant' nor 'ensemble'"
    checks = {
        "variant": isinstance(spec.get("variant"), str),
        "preprocess": isinstance(spec.get("preprocess"), dict),
        "sex_input": isinstance(spec.get("sex_input"), bool),
        "bias_correction": "bias_correction" in spec and correction(spec["bias_correction"]),
        "interval": isinstance(spec.get("interval"), dict)
        and (spec["interval"].get("halfwidth_months") is None or _number(spec["interval"]["halfwidth_months"])),
        "box_shift": spec.get("box_shift", 0.0) == 0.0
        or (_number(spec["box_shift"]) and 0 < spec["box_shift"] <= MAX_BOX_SHIFT),
        "calibration": spec.get("calibration") is None or (isinstance(spec["calibration"], dict) and all(
            correction(spec["calibration"].get(sex)) for sex in SEXES)),
    }
    if spec["kind"] == "variant":
        model, inference = spec.get("model"), spec.get("inference")
        checks.update({
            "model": isinstance(model, dict) and isinstance(model.get("file"), str)
            and Path(model["file"]).name == model["file"] and model["file"] not in ("", ".", "..")
            and isinstance(model.get("sha256"), str),
            "input_size": isinstance(spec.get("input_size"), int) and 8 <= spec["input_size"] <= 4096,
            "inference": isinstance(inference, dict) and all(isinstance(inference.get(k), bool)
                                                             for k in ("tta", "hflip")),
        })
    else:
        members = spec.get("members")
        checks["members"] = isinstance(members, list) and bool(members) and all(
            isinstance(m, dict) and isinstance(m.get("name"), str) and _number(m.get("weight"))
            and isinstance(m.get("path"), str) and _inside(m["path"]) for m in members)
    bad = [key for key, ok in checks.items() if not ok]
    return f"key(s) {bad} missing or of the wrong type" if bad else None


def _inside(relative: str) -> bool:
    """Whether ``relative`` names a folder below the bundle's (no absolute path, no '..')."""
    parts = Path(relative).parts
    return bool(parts) and not Path(relative).is_absolute() and ".." not in parts and "\\" not in relative


def _stamp(folder: Path) -> tuple:
    """What changes when a bundle folder is swapped for a new one (its bundle.json's inode and time)."""
    try:
        st = os.stat(folder / "bundle.json")
    except OSError:
        return ()
    return st.st_ino, st.st_mtime_ns, st.st_size


class Views:
    """The same films as uint8 (N, 1, S, S) images in each region an ensemble's members see; rows are
    taken as from one tensor (``views[mask]``, ``views[a:b]``), ``map`` changes every region's alike."""

    def __init__(self, by_region: dict[str, torch.Tensor]):
        sizes = {len(x) for x in by_region.values()}
        if len(sizes) != 1:
            raise ValueError(f"views of different film counts: { {r: len(x) for r, x in by_region.items()} }")
        self.by_region = by_region

    def __len__(self) -> int:
        return len(next(iter(self.by_region.values())))

    def __getitem__(self, rows) -> "Views":
        return Views({r: x[rows] for r, x in self.by_region.items()})

    def map(self, fn) -> "Views":
        return Views({r: fn(x) for r, x in self.by_region.items()})

    def of(self, name: str) -> torch.Tensor:
        if name not in self.by_region:
            raise BundleError(f"no {name} images given; the bundle's members see {sorted(self.by_region)}")
        return self.by_region[name]


@dataclass
class Bundle:
    """A loaded bundle: ``predict`` gives final estimates in months, as evaluation computed them."""

    path: Path
    spec: dict
    models: list  # (model, meta, weight, member spec) per member; one for a variant

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu") -> "Bundle":
        """The bundle in folder ``path``. Each weight file is read once, and the bytes whose sha256
        was checked are the bytes loaded. A bundle being rewritten meanwhile (``snakemake bundles``
        swaps in a whole new folder) is read again, up to three times: the estimates come from the
        old bundle or the new one, never from parts of both."""
        path = Path(path)
        for _ in range(2):
            before = _stamp(path)
            try:
                return cls._load(path, device)
            except BundleError:
                if _stamp(path) == before:  # not swapped under it: the bundle itself is bad
                    raise
                time.sleep(0.2)
        return cls._load(path, device)

    @classmethod
    def _load(cls, path: Path, device: torch.device | str) -> "Bundle":
        spec = cls.read_spec(path)
        members = [(path, spec, 1.0)] if spec["kind"] == "variant" else [
            (path / e["path"], cls.read_spec(path / e["path"]), float(e["weight"])) for e in spec["members"]]
        models = []
        for folder, member, weight in members:
            weights = folder / member["model"]["file"]
            try:
                data = weights.read_bytes()
            except OSError as exc:
                raise BundleError(f"{weights}: missing or unreadable ({exc.strerror or exc}); copy the bundle "
                                  "again") from exc
            if sha256_bytes(data) != member["model"]["sha256"]:
                raise BundleError(f"{weights}: its sha256 differs from {folder / 'bundle.json'}: a torn or "
                                  "changed copy; copy the bundle again (or snakemake --forcerun bundles)")
            model, meta = load_model(weights, device, data=data)
            models.append((model, meta, weight, member))
        return cls(path, spec, models)

    @staticmethod
    def read_spec(folder: Path) -> dict:
        file = folder / "bundle.json"
        if not file.is_file():
            raise BundleError(f"{file} not found: not a model bundle (made by `snakemake bundles`)")
        try:
            spec = read_json(file)
        except (ValueError, UnicodeDecodeError) as exc:  # torn or bit-flipped: never guess what it said
            raise BundleError(f"{file} is not readable JSON ({exc}): a torn copy; copy the bundle again "
                              "(or snakemake --forcerun bundles)") from exc
        if not isinstance(spec, dict) or spec.get("format") != BUNDLE_FORMAT:
            found = spec.get("format") if isinstance(spec, dict) else type(spec).__name__
            newer = " (a newer format: update boneage)" if str(found).startswith("boneage-bundle-v") else ""
            raise BundleError(f"{file}: format {found!r}, expected {BUNDLE_FORMAT!r}{newer}")
        problem = _spec_problem(spec)
        if problem:
            raise BundleError(f"{file}: {problem}; not a bundle this version wrote (copy it again, or "
                              "snakemake --forcerun bundles)")
        return spec

    @property
    def regions(self) -> list[str]:
        """The parts of the hand its members see, the bundle's own preprocessing's first."""
        return list(dict.fromkeys([region(self.spec["preprocess"])]
                                  + [region(member["preprocess"]) for *_, member in self.models]))

    @property
    def box_shift(self) -> float:
        """Its box views: each estimate the mean over the hand box and 8 copies moved by this share of
        its long side (``imaging.radiograph.moved_boxes``); 0 (and bundles from before them): the box alone."""
        return float(self.spec.get("box_shift", 0.0))

    @property
    def needs_sex(self) -> bool:
        """Whether an estimate depends on sex: a sex input, or a calibration per sex."""
        return bool(self.spec["sex_input"]) or bool(self.spec.get("calibration"))

    @property
    def halfwidth(self) -> float:
        q = self.spec["interval"]["halfwidth_months"]
        return float("inf") if q is None else float(q)

    def predict(self, images_u8: "torch.Tensor | Views", male: torch.Tensor,
                device: torch.device | str = "cpu") -> np.ndarray:
        """Final bone age in months for uint8 images (N, K, S, S) of the bundle's preprocessing (K box
        views of each film, their mean being its estimate: :attr:`box_shift`), or :class:`Views` of them
        in each of its :attr:`regions`."""
        device = torch.device(device)
        if not isinstance(images_u8, Views):
            if len(self.regions) > 1:
                raise BundleError(f"{self.path}: its members see {self.regions}; give the films in each (Views)")
            images_u8 = Views({self.regions[0]: images_u8})
        total = np.zeros(len(images_u8))
        for model, meta, weight, member in self.models:
            inf = member["inference"]
            films = images_u8.of(region(member["preprocess"]))
            pred = predict(model, films, male, member["input_size"], meta["target_mean"], meta["target_std"],
                           device, tta=inf["tta"], hflip=inf["hflip"])
            total += weight * corrected(pred, member["bias_correction"])
        if self.spec["kind"] == "ensemble":
            total = corrected(total, self.spec["bias_correction"])
        return calibrated(total, male.cpu().numpy(), self.spec.get("calibration"))
