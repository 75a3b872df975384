"""Hostile and broken inputs: huge declared images, reject lists that survive, changed images noticed."""

from __future__ import annotations

import os
import stat
import struct
import zlib

import numpy as np
import pandas as pd
import pytest

from boneage.files import write_json
from boneage.images import MAX_PIXELS, ImageError, read_grey
from boneage.layout import listing_sha256

from .conftest import dicom_bytes, hand_like, planned_rules, snakemake, write_rsna


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` 8-bit grey pixels and carries almost no data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_images_declaring_too_many_pixels_are_rejected_before_decoding(tmp_path):
    png = tmp_path / "huge.png"
    png.write_bytes(png_header_only(16000, 16000))
    assert png.stat().st_size < 1000
    with pytest.raises(ImageError, match=r"image too large: 16000x16000 px declared in its header, over the limit "
                                         rf"of {MAX_PIXELS:,} pixels"):
        read_grey(png)
    dcm = tmp_path / "huge.dcm"
    dcm.write_bytes(dicom_bytes(tmp_path, np.zeros((4, 8)), declared_shape=(50000, 50000)))
    with pytest.raises(ImageError, match=r"image too large: 50000x50000 px declared in its header"):
        read_grey(dcm)


def test_a_looping_symlink_in_the_image_folder_is_listed_not_fatal(tmp_path):
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    (tmp_path / "1.png").write_bytes(b"x")
    digest, n = listing_sha256(tmp_path)
    assert n == 2 and len(digest) == 64


def test_files_written_atomically_get_the_usual_mode(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"a": 1})
        (tmp_path / "b.txt").write_text("b")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == stat.S_IMODE((tmp_path / "b.txt").stat().st_mode)


@pytest.fixture
def local_set(tmp_path):
    """Four labelled films, two of them unusable (half the rows rejected)."""
    labels = pd.DataFrame({"id": ["1", "2", "3", "4"], "boneage": [60.0, 90, 120, 150], "male": [True, False] * 2})
    root = write_rsna(tmp_path / "data", labels, {"1.png": hand_like(1), "2.png": hand_like(2),
                                                  "3.png": b"", "4.png": np.full((90, 70), 9, np.uint8)})
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text("preprocess:\n  crop_method: classical\n  max_reject_fraction: 0.05\n")
    return tmp_path, root, overlay


def test_a_preprocess_stopped_by_the_reject_share_keeps_every_reject(local_set):
    work, root, overlay = local_set
    proc = snakemake(work, "preprocess", "--cores", "1", "--configfile", str(overlay), "--config",
                     "data_source=local", f"data_dir={root}", check=False)
    assert proc.returncode != 0
    assert not (work / "results" / "preprocess" / "rejects.csv").exists()  # Snakemake removed the output
    kept = work / "results" / "logs" / "preprocess" / "rejects.csv"
    rejects = pd.read_csv(kept, dtype=str).set_index("id")["reason"].to_dict()
    assert rejects == {"3": "empty file (0 bytes)", "4": "one-colour image (every pixel is 9)"}
    log = (work / "results" / "logs" / "preprocess" / "preprocess.log").read_text()
    assert "2 of 4 rows rejected" in log and "Every rejected row with its reason: results/logs/preprocess/rejects.csv" in log


def test_replacing_a_rejected_image_reruns_preprocess(local_set):
    work, root, overlay = local_set
    overlay.write_text("preprocess:\n  crop_method: classical\n  max_reject_fraction: 0.6\n")
    args = ("--configfile", str(overlay), "--config", "data_source=local", f"data_dir={root}")
    snakemake(work, "preprocess", "--cores", "1", *args)
    assert "Nothing to be done" in (lambda p: p.stdout + p.stderr)(snakemake(work, "preprocess", "-n", *args))
    (root / "boneage-training-dataset" / "3.png").unlink()
    import cv2

    cv2.imwrite(str(root / "boneage-training-dataset" / "3.png"), hand_like(3))
    assert {"download", "preprocess"} <= planned_rules(snakemake(work, "preprocess", "-n", *args))


def test_a_label_file_with_a_header_and_no_rows_is_named(tmp_path):
    from boneage.ingest import LabelsError, read_labels

    root = write_rsna(tmp_path / "data", "id,boneage,male\n", {})
    with pytest.raises(LabelsError, match=r"boneage-training-dataset.csv has a header but no rows"):
        read_labels(root / "boneage-training-dataset.csv")


def test_every_image_rejected_is_a_message_not_a_traceback(tmp_path):
    from boneage.preprocess import RejectedShareError, Settings, run

    root = write_rsna(tmp_path / "data", "id,boneage,male\n1,100,True\n2,50,False\n", {"1.png": b""})
    dataset = tmp_path / "dataset.json"
    write_json(dataset, {"labels_csv": str(root / "boneage-training-dataset.csv"),
                         "image_dir": str(root / "boneage-training-dataset")})
    with pytest.raises(RejectedShareError, match=r"2 of 2 rows rejected .*Every rejected row with its reason"):
        run(dataset, tmp_path / "pre", Settings(image_size=64, crop_method="classical"), max_reject_fraction=1.0)


def test_a_set_too_small_to_stratify_says_why(tmp_path):
    from boneage.split import SplitError, check_split, stratified_split

    index = pd.DataFrame({"id": ["1", "2", "3"], "boneage": [10.0, 100.0, 200.0], "male": [True, False, True]})
    with pytest.raises(SplitError, match=r"no 'val' images: 3 images in 3 strata \(age bin x sex\), and each "
                                         r"stratum's share rounds to 0 images"):
        check_split(stratified_split(index, 0.15, 0.15, 24, 0), index, "stratified split")


def test_a_deleted_preprocessed_image_says_to_rerun_preprocess(tmp_path):
    from boneage.data import load_images

    with pytest.raises(FileNotFoundError, match=r"re-run it: snakemake --forcerun preprocess"):
        load_images(pd.DataFrame({"image": ["images/1.png"]}), tmp_path)
