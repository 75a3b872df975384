"""Hand crop: MediaPipe on real radiographs, the classical fallback, the model file check."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from boneage.crop import (HandCropper, HandModelError, check_hand_model, classical_box, find_markers,
                          packaged_hand_model, remove_markers)

from .conftest import RAW_SAMPLE, needs_shared


def test_packaged_model_passes_and_a_changed_copy_fails(tmp_path):
    model = packaged_hand_model()
    check_hand_model(model)
    bad = tmp_path / "hand_landmarker.task"
    shutil.copyfile(model, bad)
    with open(bad, "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02")
    with pytest.raises(HandModelError, match="sha256"):
        check_hand_model(bad)
    with pytest.raises(HandModelError, match="not found"):
        HandCropper("auto", model_path=str(tmp_path / "missing.task"))


def test_classical_crop_keeps_the_hand_and_drops_the_marker():
    from boneage.demo import render

    img = render(150.0, False, np.random.default_rng(3))
    markers = find_markers(img)
    assert markers.any(), "the demo marker should be found"
    x0, y0, x1, y1 = classical_box(img, margin=0.05)
    inside = np.zeros(img.shape, bool)
    inside[y0:y1, x0:x1] = True
    bone = (img > np.percentile(img, 90)) & ~markers
    assert (bone & inside).sum() >= 0.98 * bone.sum()  # the hand's bones stay in
    assert (x1 - x0) * (y1 - y0) < 0.8 * img.size  # and much of the background goes
    cleaned, n = remove_markers(img)
    assert n >= 1 and cleaned[markers].max() < 150


@needs_shared(RAW_SAMPLE)
def test_mediapipe_finds_a_hand_on_a_real_radiograph():
    img = cv2.imread(str(RAW_SAMPLE / "boneage-training-dataset" / "13954.png"), cv2.IMREAD_GRAYSCALE)
    with HandCropper("auto") as cropper:
        crop = cropper(img)
    assert crop.method.startswith("mediapipe:") and crop.landmarks == 21
    x0, y0, x1, y1 = crop.box
    assert 0 <= x0 < x1 <= img.shape[1] and 0 <= y0 < y1 <= img.shape[0]
    assert (x1 - x0) * (y1 - y0) < 0.9 * img.size


def test_no_hand_falls_back_and_says_so():
    noise = np.random.default_rng(0).integers(0, 30, (200, 160), dtype=np.uint8)
    with HandCropper("none") as none:
        assert none(noise).method == "full"
    with HandCropper("classical") as classical:
        crop = classical(noise)
    assert crop.method in ("classical", "full")
