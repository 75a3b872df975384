"""Inputs nobody wrote by hand (hypothesis): label tables, image bytes, DICOM headers and pixels, and
bundle.json files, generated. Every example ends in a result or in an error of the project's own kind
that names the file; never a traceback of another kind, never a file written. Each property runs a
fixed number of examples from a fixed seed (derandomize), so CI sees the same cases every time; a
failing example found once is kept below as a plain regression test."""

from __future__ import annotations

import csv
import io
import json
import math

import cv2
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from boneage.imaging.images import ImageError, read_grey, to_uint8
from boneage.imaging.ingest import BONEAGE_RANGE_MONTHS, ID_PATTERN, LabelsError, read_labels

FIXED = settings(derandomize=True, deadline=None, database=None, max_examples=120,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# --- label tables -------------------------------------------------------------------------------------------
SEX_SPELLINGS = ["True", "False", "true", "FALSE", "1", "0", "1.0", "M", "f", "male", "Female", "yes", "no", "",
                 " M ", "2", "nan", "None", "♂"]
AGE_TEXTS = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-10**30, 10**30).map(str),
                      st.sampled_from(["", " 120 ", "1e3", "-0", "12,5", "NaN", "inf", "0x10", "١٢٠"]), st.text(max_size=8))
IDS = st.one_of(st.text(max_size=20), st.from_regex(ID_PATTERN, fullmatch=True),
                st.sampled_from(["../x", "/etc/passwd", "a/b", ".hidden", "CON", "x" * 200, "1381", "1381 "]))


@st.composite
def label_files(draw):
    columns = draw(st.permutations(["id", "boneage", "male"] + draw(st.lists(st.text(max_size=5), max_size=2))))
    columns = [c for c in columns if draw(st.booleans()) or c in ("id", "boneage", "male")] if draw(
        st.integers(0, 9)) else columns[:-1]
    rows = draw(st.lists(st.fixed_dictionaries({"id": IDS, "boneage": AGE_TEXTS, "male": st.sampled_from(
        SEX_SPELLINGS) | st.text(max_size=4)}), max_size=12))
    out = io.StringIO()
    writer = csv.writer(out, quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL])))
    writer.writerow(columns)
    for row in rows:
        cells = [row.get(c, "x") for c in columns]
        if draw(st.integers(0, 9)) == 0:  # a ragged row
            cells = cells + ["extra"] if draw(st.booleans()) else cells[:-1]
        writer.writerow(cells)
    text = out.getvalue()
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1", "cp1252"]))
    return text.encode(encoding, errors="replace"), len(rows)


@FIXED
@given(label_files())
def test_any_label_table_gives_checked_rows_and_named_rejects_or_one_named_error(tmp_path, generated):
    data, n_rows = generated
    path = tmp_path / "labels.csv"
    path.write_bytes(data)
    try:
        labels, rejects = read_labels(path)
    except LabelsError as exc:
        assert str(path) in str(exc)
        return
    assert labels["id"].str.fullmatch(ID_PATTERN).all() and labels["id"].is_unique
    lo, hi = BONEAGE_RANGE_MONTHS
    assert labels["boneage"].between(lo, hi).all() and labels["male"].dtype == bool
    assert (rejects["reason"] != "").all() and (rejects["file"] == str(path)).all()
    assert len(labels) + len(rejects) == len(pd.read_csv(path, dtype=str, keep_default_na=False))  # none lost


def test_a_row_of_a_million_columns_is_one_named_error(tmp_path):
    path = tmp_path / "wide.csv"
    path.write_text("id,boneage,male\n" + ",".join(["1"] * 1_000_000) + "\n")
    with pytest.raises(LabelsError, match=str(path)):
        read_labels(path)


# --- image bytes --------------------------------------------------------------------------------------------
def _film(seed: int, size: int = 48, depth=np.uint8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.random((size, size)), (0, 0), 3)
    img = (img - img.min()) / (np.ptp(img) or 1)
    return (img * np.iinfo(depth).max).astype(depth)


ENCODED = {ext: cv2.imencode(ext, _film(0, depth=np.uint16 if ext == ".png16" else np.uint8))[1].tobytes()
           for ext in (".png", ".jpg", ".webp")}
ENCODED[".png16"] = cv2.imencode(".png", _film(0, depth=np.uint16))[1].tobytes()


@FIXED
@given(st.sampled_from(sorted(ENCODED)), st.data())
def test_truncated_or_bit_flipped_images_decode_or_are_an_image_error(tmp_path, ext, data):
    raw = bytearray(ENCODED[ext])
    if data.draw(st.booleans(), label="truncate"):
        raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="keep")]
    for _ in range(data.draw(st.integers(0, 4), label="flips")):
        if raw:
            raw[data.draw(st.integers(0, len(raw) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    path = tmp_path / f"film{ext.replace('16', '')}"
    path.write_bytes(bytes(raw))
    try:
        img = read_grey(path)
    except ImageError:
        return
    assert img.ndim == 2 and img.dtype in (np.uint8, np.uint16) and to_uint8(img).dtype == np.uint8


# --- DICOM --------------------------------------------------------------------------------------------------
@st.composite
def dicoms(draw):
    import pydicom
    from pydicom.dataelem import RawDataElement
    from pydicom.dataset import FileMetaDataset
    from pydicom.tag import Tag
    from pydicom.uid import JPEG2000, ExplicitVRLittleEndian, JPEGBaseline8Bit, RLELossless, generate_uid

    bits = draw(st.sampled_from([8, 12, 16]))
    signed = draw(st.booleans())
    img = _film(draw(st.integers(0, 3)), 32, np.uint16).astype(np.int64) >> (16 - bits)
    if signed:
        img -= 1 << (bits - 1)
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    syntax = draw(st.sampled_from([ExplicitVRLittleEndian] * 4 + [JPEG2000, JPEGBaseline8Bit, RLELossless]))
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 32, 32, 1
    ds.PhotometricInterpretation = draw(st.sampled_from(["MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR", "", "X"]))
    ds.BitsAllocated = 8 if bits == 8 else 16
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, int(signed)
    dtype = {(8, 0): np.uint8, (8, 1): np.int8, (16, 0): np.uint16, (16, 1): np.int16}[(ds.BitsAllocated, int(signed))]
    ds.PixelData = img.astype(dtype).tobytes()
    if syntax != ExplicitVRLittleEndian:  # raw bytes said to be compressed: data no decoder can read
        from pydicom.encaps import encapsulate

        ds.PixelData = encapsulate([ds.PixelData])
        ds["PixelData"].VR = "OB"
    def raw(tag: int, vr: str, text: str) -> None:  # stored as given, malformed or not
        value = text.encode("utf-8") + (b" " if len(text.encode("utf-8")) % 2 else b"")
        ds[tag] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)

    if draw(st.booleans()):
        raw(0x00281053, "DS", draw(st.sampled_from(["1", "0.5", "-1", "0", "1e30", "abc", ""])))  # slope
        raw(0x00281052, "DS", draw(st.sampled_from(["0", "-1024", "1e30", "x", ""])))  # intercept
    if draw(st.booleans()):
        raw(0x00281050, "DS", draw(st.sampled_from(["100", "0", "-5", "1e9", "50\\60", ""])))  # window centre
        raw(0x00281051, "DS", draw(st.sampled_from(["200", "0", "1", "-3", "x", ""])))  # window width
    if draw(st.booleans()):
        raw(0x00100040, "CS", draw(st.sampled_from(["M", "F", "O", "", "male", "m ", "Ж"])))  # PatientSex
    if draw(st.booleans()):
        raw(0x00101010, "AS", draw(st.sampled_from(["010Y", "006M", "020W", "100D", "10Y", "abcd", "999Y", "",
                                                    "-01Y"])))  # PatientAge
    if draw(st.booleans()):
        raw(0x00100030, "DA", draw(st.sampled_from(["20100101", "20101301", "2010", "", "00000000", "99991231"])))
        raw(0x00080020, "DA", draw(st.sampled_from(["20200101", "20000101", "2020-01-01", "", "20200230"])))
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@settings(FIXED, max_examples=80)
@given(dicoms())
def test_generated_dicom_films_and_headers_give_an_image_and_facts_or_an_image_error(tmp_path, data):
    from boneage.results.estimates import dicom_facts

    path = tmp_path / "film.dcm"
    path.write_bytes(data)
    facts = dicom_facts(path)
    assert facts["male"] in (0.0, 1.0) or math.isnan(facts["male"])
    assert math.isnan(facts["age"]) or 0 <= facts["age"] <= 130 * 12
    try:
        img = read_grey(path)
    except ImageError:
        return
    assert img.ndim == 2
    out = to_uint8(img)
    assert out.dtype == np.uint8 and out.shape == img.shape


# --- bundle.json --------------------------------------------------------------------------------------------
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(), st.text(max_size=6),
                   st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                   st.sampled_from(["../../etc", "/etc/passwd", "members/../../x", "model.pt"]))


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    """A real variant bundle (an untrained ResNet-18 at 32 px) to mutate."""
    from boneage.export import main

    from .conftest import export_args, untrained_model

    root = tmp_path_factory.mktemp("bundle")
    untrained_model(root / "model.pt")
    main(["variant", "--model", str(root / "model.pt"), *export_args(root, root / "b")])
    return root / "b"


def _paths(obj, prefix=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))


@settings(FIXED, max_examples=100)
@given(st.data())
def test_any_damaged_bundle_json_loads_or_is_a_bundle_error_naming_it(bundle_dir, tmp_path, data):
    import shutil

    import torch

    from boneage.results.bundle import Bundle, BundleError

    spec = json.loads((bundle_dir / "bundle.json").read_text())
    for _ in range(data.draw(st.integers(1, 3), label="changes")):
        keys = sorted(_paths(spec), key=str)
        where = data.draw(st.sampled_from(keys), label="key")
        parent = spec
        for k in where[:-1]:
            parent = parent[k]
        if data.draw(st.booleans(), label="drop"):
            parent.pop(where[-1], None)
        else:
            parent[where[-1]] = data.draw(VALUES, label="value")
    if data.draw(st.integers(0, 9), label="kind") == 0:
        spec = {"format": "boneage-bundle-v2", "kind": "variant"}
    folder = tmp_path / "b"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(bundle_dir, folder)
    (folder / "bundle.json").write_text(json.dumps(spec))
    try:
        bundle = Bundle.load(folder)
    except BundleError as exc:
        assert str(folder) in str(exc)
        return
    estimates = bundle.predict(torch.zeros((2, 1, 32, 32), dtype=torch.uint8), torch.zeros(2))
    assert estimates.shape == (2,)
    assume(True)


# --- configuration values -----------------------------------------------------------------------------------
def _schema_keys() -> list[str]:
    import yaml

    from .conftest import REPO

    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())

    def leaves(node, prefix=""):
        for key, sub in node.get("properties", {}).items():
            sub = schema["$defs"][sub["$ref"].rsplit("/", 1)[1]] if "$ref" in sub else sub
            if sub.get("type") == "object" and "properties" in sub:
                yield from leaves(sub, f"{prefix}{key}.")
            else:
                yield prefix + key

    return sorted(leaves(schema))


HOSTILE = st.one_of(st.sampled_from([None, True, -1, 0, 1, 10**12, -0.5, 1e308, float("nan"), "", "abc", "../x",
                                     "resnet18", [], ["x"], {}, {"a": 1}]), st.text(max_size=6), st.integers())


@settings(FIXED, max_examples=12)
@given(st.sampled_from(_schema_keys()), HOSTILE)
def test_any_config_value_plans_or_stops_with_the_key_named(tmp_path, key, value):
    """A value given for any key of the schema (in an overlay config file, as a user edits one): the dry
    run plans, or stops before any job with a message among its last lines that names the key."""
    import yaml

    from .conftest import snakemake

    overlay, node = {}, None
    node = overlay
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    (tmp_path / "overlay.yaml").write_text(yaml.safe_dump(overlay))
    from .conftest import REPO
    proc = snakemake(tmp_path, "all", "-n", "--configfile", str(REPO / "config.yaml"), str(tmp_path / "overlay.yaml"),
                     check=False)
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out[-3000:]
    if proc.returncode != 0:
        tail = "\n".join(out.strip().splitlines()[-6:])
        assert f"'{key}" in tail or f"'{key.split('.')[0]}" in tail or f"{leaf}" in tail, (key, value, tail)
