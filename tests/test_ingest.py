"""Bad input in the RSNA layout: each case has one exact handling, and no row vanishes."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest

from boneage.files import sha256_file
from boneage.imaging.images import ImageError, read_grey, to_uint8
from boneage.imaging.ingest import LabelsError, LayoutError, read_labels, resolve_layout
from boneage.preprocess import RejectedShareError, Settings, run

from .conftest import dicom_bytes, hand_like, write_rsna


def test_missing_column_names_file_and_column(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("id,boneage\n1,100\n")
    with pytest.raises(LabelsError, match=r"labels\.csv.*lacks required column\(s\) \['male'\]"):
        read_labels(csv)


def test_layout_errors_name_what_is_missing(tmp_path):
    with pytest.raises(LayoutError, match="data folder not found"):
        resolve_layout(tmp_path / "nope")
    with pytest.raises(LayoutError, match="boneage-training-dataset.csv"):
        resolve_layout(tmp_path)


def test_bad_rows_go_to_rejects_with_reason(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text(
        "id,boneage,male\n"
        "1,100,True\n"  # good
        "2,abc,True\n"  # not a number
        "3,300,False\n"  # out of range
        "4,-1,False\n"  # out of range
        "5,50,maybe\n"  # sex not understood
        "6,60,True\n"  # duplicate id (with row 7)
        "6,61,False\n"
        ",70,True\n"  # empty id
        "9,0,F\n"  # good, other spellings of sex
        "10,240,1\n"
    )
    labels, rejects = read_labels(csv)
    assert labels["id"].tolist() == ["1", "9", "10"]
    assert labels["male"].tolist() == [True, False, True]
    reasons = dict(zip(rejects["id"] + "@" + rejects.index.astype(str), rejects["reason"]))
    text = " | ".join(rejects["reason"])
    assert "boneage 'abc' is not a number" in text
    assert "boneage 300 months outside 0-240" in text
    assert "boneage -1 months outside 0-240" in text
    assert "sex value 'maybe' not understood" in text
    assert sum("duplicate id (csv rows 6, 7)" in r for r in rejects["reason"]) == 2
    assert "empty id" in text
    assert len(labels) + len(rejects) == 10, reasons  # every row is somewhere


def test_formats_and_bad_images_through_preprocess(tmp_path):
    good = hand_like(1)
    wide = (hand_like(2).astype(np.uint16) * 8 + 1000)  # 16-bit, 12-bit range
    dcm = dicom_bytes(tmp_path, hand_like(3).astype(np.uint16) * 10, "MONOCHROME1", 2.0, -5.0)
    images = {
        "1.png": good,
        "2.png": wide,
        "3.jpg": good,
        "4.webp": good,
        "5.dcm": dcm,
        "7.png": b"",  # zero-size file
        "8.png": b"\x89PNG\r\n\x1a\nnot really a png",  # undecodable
        "9.png": np.full((100, 80), 77, np.uint8),  # one colour
    }
    labels = pd.DataFrame({"id": range(1, 10), "boneage": 120.0, "male": True})  # 6 has no image
    root = write_rsna(tmp_path / "data", labels, images)
    dataset = tmp_path / "dataset.json"
    dataset.write_text(pd.Series({"labels_csv": str(root / "boneage-training-dataset.csv"),
                                  "image_dir": str(root / "boneage-training-dataset")}).to_json())
    out = tmp_path / "pre"
    settings = Settings(image_size=64, crop_method="classical")
    with pytest.raises(RejectedShareError, match=r"4 of 9 rows rejected .* First: .*6\.\*: image file not found"):
        run(dataset, out, settings, threads=1, max_reject_fraction=0.2)
    rejects = pd.read_csv(out / "rejects.csv", dtype=str).set_index("id")["reason"].to_dict()
    assert rejects == {
        "6": "image file not found",
        "7": "empty file (0 bytes)",
        "8": "undecodable image data (.png)",
        "9": "one-colour image (every pixel is 77)",
    }
    index = run(dataset, out, settings, threads=1, max_reject_fraction=0.5)
    assert sorted(index["id"]) == ["1", "2", "3", "4", "5"]
    row = index.set_index("id")
    assert row.loc["2", "source_dtype"] == "uint16" and row.loc["5", "source_dtype"] == "float32"
    for image_id in row.index:
        png = cv2.imread(str(out / row.loc[image_id, "image"]), cv2.IMREAD_UNCHANGED)
        assert png.shape == (64, 64) and png.dtype == np.uint8 and png.std() > 10


def test_16bit_is_windowed_to_full_range(tmp_path):
    img = np.linspace(1000, 3000, 200 * 100).reshape(200, 100).astype(np.uint16)
    path = tmp_path / "x.png"
    cv2.imwrite(str(path), img)
    raw = read_grey(path)
    assert raw.dtype == np.uint16
    out = to_uint8(raw)
    assert out.min() == 0 and out.max() == 255


def test_dicom_rescale_windowing_and_monochrome1(tmp_path):
    pixels = np.zeros((64, 64), np.uint16)
    pixels[16:48, 16:48] = 1000
    for photometric, bright_inside in (("MONOCHROME2", True), ("MONOCHROME1", False)):
        path = tmp_path / f"{photometric}.dcm"
        path.write_bytes(dicom_bytes(tmp_path, pixels, photometric, slope=2.0, intercept=-100.0))
        img = read_grey(path)
        inside, outside = img[32, 32], img[0, 0]
        assert (inside > outside) == bright_inside
        assert abs(inside - outside) == pytest.approx(2000.0)  # slope applied
    pixels[0:8, 0:8] = 500  # the window's centre
    path = tmp_path / "win.dcm"
    path.write_bytes(dicom_bytes(tmp_path, pixels, window=(500, 200)))
    img = read_grey(path)
    lo, hi = img[40, 0], img[32, 32]  # 0 and 1000: below and above the window 400-600
    assert hi > lo
    assert img[4, 4] == pytest.approx((lo + hi) / 2, rel=0.01)  # the centre maps to mid-grey


def test_undecodable_dicom_is_an_image_error(tmp_path):
    path = tmp_path / "bad.dcm"
    path.write_bytes(b"DICM but not really")
    with pytest.raises(ImageError, match="undecodable DICOM"):
        read_grey(path)


def _tree(root) -> dict:
    """Every path under ``root``, with the content hash and mtime of the files."""
    return {str(p.relative_to(root)): (sha256_file(p), p.stat().st_mtime_ns) if p.is_file() else "dir"
            for p in root.rglob("*")}


def test_ids_that_are_paths_are_rejected_and_write_nothing_outside_the_output(tmp_path):
    """A label table is data from elsewhere: '../x', '/abs' or 'a/b' never steer a read or a write."""
    work = tmp_path / "work"
    root = write_rsna(work / "data", "id,boneage,male\n1,120,True\n../side,120,True\n"
                      "../../../../tmp/x/y,100,False\n/etc/hostname,90,True\na/b,80,False\n.hidden,70,True\n",
                      {"1.png": hand_like(1)})
    # an image of the same name as a traversing id's target: it must be neither read nor overwritten
    cv2.imwrite(str(work / "data" / "side.png"), hand_like(2))
    dataset = work / "dataset.json"
    dataset.write_text(pd.Series({"labels_csv": str(root / "boneage-training-dataset.csv"),
                                  "image_dir": str(root / "boneage-training-dataset")}).to_json())
    out = work / "results" / "pre"
    before = _tree(tmp_path)
    index = run(dataset, out, Settings(image_size=64, crop_method="classical"), threads=1, max_reject_fraction=1.0)
    after = {k: v for k, v in _tree(tmp_path).items() if not k.startswith("work/results")}
    assert after == before
    assert list(index["id"]) == ["1"]
    rejects = pd.read_csv(out / "rejects.csv", dtype=str, keep_default_na=False).set_index("id")["reason"]
    assert set(rejects.index) == {"../side", "../../../../tmp/x/y", "/etc/hostname", "a/b", ".hidden"}
    assert rejects["../side"] == ("id '../side' is not a plain name (letters, digits, '.', '_', '-', "
                                  "starting with a letter or digit, at most 128 characters)")
    assert sorted(p.name for p in (out / "images").iterdir()) == ["1.png"]
