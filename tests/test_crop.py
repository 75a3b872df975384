"""Hand crop: MediaPipe on real radiographs, the classical fallback, the model file check."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.crop_quality import crops_against_hands
from boneage.imaging.crop import (
    HandCropper,
    HandModelError,
    check_hand_model,
    classical_box,
    packaged_hand_model,
    region_box,
    remove_markers,
)
from boneage.imaging.demo import render
from boneage.imaging.radiograph import Settings, process_image

from .conftest import RAW_SAMPLE, TRAIN_299, needs_shared

# where the hand lies on each raw sample film and on three 299 px films, read by eye (see the headers)
RAW_HANDS = Path(__file__).parent / "data" / "raw_sample_hands.csv"
TRAIN_299_HANDS = Path(__file__).parent / "data" / "train299_hands.csv"


def _area(box) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


def _iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    return ix * iy / (_area(a) + _area(b) - ix * iy)


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
    img = render(150.0, False, np.random.default_rng(3))
    markers = img >= 200  # the demo's lead letters are drawn at 230-250, its bones below 190
    assert markers.any()
    x0, y0, x1, y1 = classical_box(img, margin=0.05)
    inside = np.zeros(img.shape, bool)
    inside[y0:y1, x0:x1] = True
    bone = (img > np.percentile(img, 90)) & ~markers
    assert (bone & inside).sum() >= 0.98 * bone.sum()  # the hand's bones stay in
    assert (x1 - x0) * (y1 - y0) < 0.8 * img.size  # and much of the background goes
    cleaned, n = remove_markers(img)
    assert n >= 1 and cleaned[markers].max() < 150


def test_a_film_edge_touching_the_fingers_does_not_stretch_the_crop():
    img = render(120.0, True, np.random.default_rng(5))
    clean = classical_box(img, margin=0.0)
    h, w = img.shape
    # bright cassette edges: a line through the fingertips and two along the sides, joined to it
    framed = img.copy()
    cv2.line(framed, (0, clean[1] + 3), (w - 1, clean[1] + 3), 235, 3)
    cv2.line(framed, (2, 0), (2, h - 1), 235, 3)
    cv2.line(framed, (w - 3, 0), (w - 3, h - 1), 235, 3)
    assert _iou(classical_box(framed, margin=0.0), clean) > 0.9


def test_a_dim_hand_in_a_collimated_field_is_cropped_to_the_hand():
    img = render(150.0, False, np.random.default_rng(8))
    clean = classical_box(img, margin=0.0)
    # the same film under-exposed (contrast / 4) inside a grey collimated field on a dark film
    h, w = img.shape
    field = (slice(h // 12, h - h // 12), slice(w // 12, w - w // 12))
    dim = np.full(img.shape, 20, np.float32)
    dim[field] = 70 + (img[field] - np.median(img[:20, :20])) / 4
    dim = np.clip(dim + np.random.default_rng(0).normal(0, 2, dim.shape), 0, 255).astype(np.uint8)
    box = classical_box(dim, margin=0.0)
    assert _iou(box, clean) > 0.75  # the hand, down to where the field cuts the forearm
    assert _area(box) < 0.6 * dim.size  # not the whole field


@needs_shared(TRAIN_299)
def test_saturated_bone_is_never_painted_over():
    # a high-contrast film whose carpals and distal radius reach the marker's grey level
    img = cv2.imread(str(TRAIN_299 / "boneage-training-dataset" / "11358.webp"), cv2.IMREAD_GRAYSCALE)
    cleaned, _ = remove_markers(img)
    changed = cleaned != img
    assert img[215:245, 42:65].max() > 200 and cleaned[215:245, 42:65].max() < 100  # "L DNN" goes
    assert not changed[:, 80:270].any()  # the hand, fingertips to forearm, stays as it was
    box = classical_box(img, margin=0.05)
    assert box[3] == img.shape[0]  # the wrist and forearm stay in the crop


@needs_shared(RAW_SAMPLE)
@pytest.mark.parametrize("method", ["auto", "classical"])
def test_every_raw_film_keeps_the_whole_hand_and_drops_the_background(method):
    crops = crops_against_hands(RAW_SAMPLE / "boneage-training-dataset", RAW_HANDS, method)
    assert len(crops) == 20
    for row in crops.itertuples():
        assert row.holds_hand, f"{row.id}: crop {row.box} ({row.method}) cuts into the hand at {row.hand}"
        assert row.area_over_hand <= 2.0, f"{row.id}: crop {row.box} keeps too much background"


@needs_shared(TRAIN_299)
def test_a_mediapipe_hand_that_is_only_the_thumb_is_not_believed():
    # on these films MediaPipe's landmarks cover the thumb alone, or the hand without the thumb tip
    crops = crops_against_hands(TRAIN_299 / "boneage-training-dataset", TRAIN_299_HANDS, "auto")
    for row in crops.itertuples():
        assert row.holds_hand, f"{row.id}: crop {row.box} ({row.method}) cuts into the hand at {row.hand}"


@needs_shared(RAW_SAMPLE)
def test_mediapipe_finds_a_hand_on_a_real_radiograph():
    img = cv2.imread(str(RAW_SAMPLE / "boneage-training-dataset" / "13954.png"), cv2.IMREAD_GRAYSCALE)
    with HandCropper("auto") as cropper:
        crop = cropper(img)
    assert crop.method.startswith("mediapipe:") and crop.landmarks == 21
    x0, y0, x1, y1 = crop.box
    assert 0 <= x0 < x1 <= img.shape[1] and 0 <= y0 < y1 <= img.shape[0]
    assert (x1 - x0) * (y1 - y0) < 0.9 * img.size
    # only the renderings asked for are tried, in that order
    with HandCropper("auto", renderings=("clahe",)) as cropper:
        assert cropper(img).method == "mediapipe:clahe"
    with pytest.raises(ValueError, match="clahe_inverted"):
        HandCropper("auto", renderings=("negative",))


def test_no_hand_falls_back_and_says_so():
    noise = np.random.default_rng(0).integers(0, 30, (200, 160), dtype=np.uint8)
    with HandCropper("none") as none:
        assert none(noise).method == "full"
    with HandCropper("classical") as classical:
        crop = classical(noise)
    assert crop.method in ("classical", "full")


def test_the_wrist_view_is_the_lower_middle_of_the_hand_at_full_resolution(tmp_path):
    # geometry: a square of half the hand box's height, centred across it, resting on its lower edge
    assert region_box((40, 20, 240, 420), "hand", 300, 450) == (40, 20, 240, 420)
    assert region_box((40, 20, 240, 420), "wrist", 300, 450) == (40, 220, 240, 420)
    assert region_box((40, 20, 240, 420), "fingers", 300, 450) == (20, 20, 260, 260)
    # a box at the film's edge: the square is clipped to the film, never reaching outside it
    assert region_box((0, 0, 100, 400), "wrist", 100, 400) == (0, 200, 100, 400)
    with pytest.raises(ValueError, match="wrist"):
        region_box((0, 0, 10, 10), "thumb", 10, 10)
    # a film through preprocessing: the wrist image is the hand image's lower middle, twice as large
    film = tmp_path / "film.png"
    cv2.imwrite(str(film), render(150.0, False, np.random.default_rng(3)))
    cropper = HandCropper("classical")
    hand, fields, _ = process_image(film, Settings(256, crop_method="classical"), cropper)
    wrist, wrist_fields, _ = process_image(film, Settings(256, crop_method="classical", region="wrist"), cropper)
    box = [fields[k] for k in ("crop_x0", "crop_y0", "crop_x1", "crop_y1")]
    assert [wrist_fields[k] for k in ("crop_x0", "crop_y0", "crop_x1", "crop_y1")] == box  # the index keeps the hand box
    x0, y0, x1, y1 = region_box(box, "wrist", fields["width_before"], fields["height_before"])
    scale = 256 / max(box[2] - box[0], box[3] - box[1])  # the hand view's scale; the wrist view's is twice it
    pad_x = (256 - round((box[2] - box[0]) * scale)) // 2
    part = hand[round((y0 - box[1]) * scale):round((y1 - box[1]) * scale),
                pad_x + round((x0 - box[0]) * scale):pad_x + round((x1 - box[0]) * scale)]
    zoomed = cv2.resize(part, (256, 256), interpolation=cv2.INTER_CUBIC).astype(float)
    assert np.corrcoef(zoomed.ravel(), wrist.astype(float).ravel())[0, 1] > 0.9
    assert np.corrcoef(hand.astype(float).ravel(), wrist.astype(float).ravel())[0, 1] < 0.5
