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
from boneage.imaging.images import MAX_PIXELS, ImageError, read_grey
from boneage.imaging.layout import listing_sha256

from .conftest import (
    RAW_SAMPLE,
    REPO,
    TRAIN_299,
    dicom_bytes,
    hand_like,
    needs_shared,
    planned_rules,
    snakemake,
    write_rsna,
)


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
    from boneage.imaging.ingest import LabelsError, read_labels

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
    from boneage.learning.data import load_images

    with pytest.raises(FileNotFoundError, match=r"re-run it: snakemake --forcerun preprocess"):
        load_images(pd.DataFrame({"image": ["images/1.png"]}), tmp_path)


# --- the hand check: images that are not hand radiographs --------------------------------------
NOT_HANDS = {  # generated image -> the start of its reject reason
    "gradient": "not a hand radiograph: no detail beyond a smooth ramp",
    "gradient_diagonal": "not a hand radiograph: no detail beyond a smooth ramp",
    "vignette": "not a hand radiograph: no detail beyond a smooth ramp",
    "noise_gaussian": "not a hand radiograph: neighbouring pixels barely alike",
    "noise_uniform": "not a hand radiograph: neighbouring pixels barely alike",
    "colour_photo": "not a hand radiograph: a colour image",
    "film16_one_pixel": "not a hand radiograph: near-empty dynamic range (99 % of pixels within 0 grey levels",
    "blank_with_dot": "not a hand radiograph: near-empty dynamic range",
}
DOUBTFUL = {"noise_smooth", "text_page"}  # kept, flagged in the index and the report


def _preprocess(tmp_path, images: dict, **settings) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    from boneage.files import read_json
    from boneage.preprocess import Settings, run

    ids = [name.split(".")[0] for name in images]
    labels = pd.DataFrame({"id": ids, "boneage": 100.0, "male": True})
    root = write_rsna(tmp_path / "data", labels, images)
    dataset = tmp_path / "dataset.json"
    write_json(dataset, {"labels_csv": str(root / "boneage-training-dataset.csv"),
                         "image_dir": str(root / "boneage-training-dataset")})
    out = tmp_path / "pre"
    index = run(dataset, out, Settings(image_size=64, crop_method="classical", **settings), max_reject_fraction=1.0)
    rejects = pd.read_csv(out / "rejects.csv", dtype=str)
    return index, rejects, read_json(out / "preprocess_summary.json")


def test_images_that_are_not_hand_radiographs_are_rejected_or_flagged(tmp_path):
    from boneage.imaging.demo import non_hands

    images = {f"{name}.png": img for name, img in non_hands().items()}
    images.update({"hand1.png": hand_like(1, (400, 330)), "hand2.png": hand_like(2, (400, 330))})
    index, rejects, summary = _preprocess(tmp_path, images)
    reasons = rejects.set_index("id")["reason"].to_dict()
    assert set(reasons) == set(NOT_HANDS)
    for name, start in NOT_HANDS.items():
        assert reasons[name].startswith(start), (name, reasons[name])
    doubts = index.set_index("id")["hand_doubt"].to_dict()
    assert {i for i, d in doubts.items() if d} == DOUBTFUL
    assert doubts["hand1"] == doubts["hand2"] == ""
    assert summary["hand_doubts"] == 2 and {d["id"] for d in summary["hand_doubt_examples"]} == DOUBTFUL

    from boneage.results.page import _doubts

    page = _doubts(summary)
    assert "2 images passed the hand check with a doubt" in page and "text_page" in page


def test_the_hand_check_can_be_turned_off_but_colour_is_always_refused(tmp_path):
    from boneage.imaging.demo import non_hands

    made = non_hands()
    index, rejects, _ = _preprocess(tmp_path, {"gradient.png": made["gradient"], "photo.png": made["colour_photo"]},
                                    hand_check=False)
    assert list(index["id"]) == ["gradient"]
    assert rejects.set_index("id")["reason"]["photo"].startswith("not a hand radiograph: a colour image")


def test_a_tinted_grey_scan_is_not_taken_for_colour(tmp_path):
    grey = hand_like(4, (400, 330)).astype(np.float32)
    sepia = np.clip(np.stack([grey * 0.85, grey * 0.95, grey * 1.0 + 12], axis=2), 0, 255).astype(np.uint8)
    path = tmp_path / "sepia.png"
    import cv2

    cv2.imwrite(str(path), sepia)
    out = read_grey(path)
    assert out.ndim == 2 and abs(float(out.mean()) - float(grey.mean())) < 15


@needs_shared(TRAIN_299)
def test_real_radiographs_pass_the_hand_check():
    """Every 50th RSNA training film and all 20 raw films: none rejected (bench/hand_check.py runs
    all 12,611)."""
    from boneage.imaging import handcheck
    from boneage.imaging.crop import Analysis
    from boneage.imaging.images import to_uint8

    films = sorted((TRAIN_299 / "boneage-training-dataset").iterdir())[::50]
    films += sorted((RAW_SAMPLE / "boneage-training-dataset").iterdir())
    rejected = {}
    for path in films:
        img = to_uint8(read_grey(path))
        reason, _ = handcheck.check(img, Analysis(img))
        if reason:
            rejected[path.name] = reason
    assert len(films) > 250 and rejected == {}


def _png_stream(width: int, height: int, row: bytes) -> bytes:
    """A real 8-bit grey PNG of ``height`` equal rows, made without holding the image in memory."""
    z = zlib.compressobj(9)
    body = b"".join(z.compress(b"\0" + row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def test_preprocess_memory_stays_bounded_on_huge_films(tmp_path):
    """A real 16000x16000 PNG (rejected from its header) and an 8000x8000 one (decoded, cropped):
    the preprocess process peaks well under the rule's mem_mb."""
    import subprocess
    import sys

    import cv2

    small = cv2.resize(hand_like(5, (400, 400)), (8000, 8000), interpolation=cv2.INTER_LINEAR)
    ok, big = cv2.imencode(".png", small, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    del small
    labels = pd.DataFrame({"id": ["huge", "big"], "boneage": [100.0, 120.0], "male": [True, False]})
    root = write_rsna(tmp_path / "data", labels, {"huge.png": _png_stream(16000, 16000, bytes(16000)),
                                                  "big.png": big.tobytes()})
    dataset = tmp_path / "dataset.json"
    write_json(dataset, {"labels_csv": str(root / "boneage-training-dataset.csv"),
                         "image_dir": str(root / "boneage-training-dataset")})
    code = ("import resource, sys; from boneage.preprocess import main; "
            "main(sys.argv[1:]); print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    proc = subprocess.run([sys.executable, "-c", code, "--dataset", str(dataset), "--out-dir", str(tmp_path / "pre"),
                           "--image-size", "64", "--crop-method", "classical", "--max-reject-fraction", "0.6",
                           "--contact-sheet-n", "4", "--threads", "1"], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    peak_gb = int(proc.stdout.split("PEAK_KB")[1]) / 1e6
    rejects = pd.read_csv(tmp_path / "pre" / "rejects.csv", dtype=str).set_index("id")["reason"]
    assert list(rejects.index) == ["huge"] and rejects["huge"].startswith("image too large: 16000x16000")
    assert peak_gb < 2.0, f"preprocess peaked at {peak_gb:.2f} GB"
    print(f"peak {peak_gb:.2f} GB")
