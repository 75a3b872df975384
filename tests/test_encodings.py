"""One film, every encoding, one model input: the same radiograph as 8-bit PNG, 16-bit PNG, JPEG and
DICOM (12-bit MONOCHROME2, 16-bit MONOCHROME1, with a VOI window, rescaled) gets the same crop box and
the same preprocessed pixels, so every model gives it the same estimate. Demo films and raw films from
../shared (the measured table over all 20 raw films: docs/bad_inputs.md, bench/encodings.py)."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from boneage.imaging.crop import HandCropper
from boneage.imaging.demo import render
from boneage.imaging.encodings import forms
from boneage.imaging.radiograph import Settings, process_image
from boneage.imaging.radiograph import render as render_input

from .conftest import RAW_SAMPLE

RAW = sorted((RAW_SAMPLE / "boneage-training-dataset").glob("*.png"))[:3]


def _films():
    rng = np.random.default_rng(5)
    yield "demo-girl", render(60.0, False, rng)
    yield "demo-boy", render(150.0, True, rng)
    for path in RAW:
        film = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        scale = 700 / max(film.shape)  # the crop at the size of a typical export; faster
        yield path.name, cv2.resize(film, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


@pytest.mark.parametrize("crop_method", ["classical", "auto"])
def test_every_lossless_encoding_of_a_film_gives_the_same_crop_and_model_input(tmp_path, crop_method):
    if not RAW:
        pytest.skip(f"no raw films in {RAW_SAMPLE}")
    settings = Settings(crop_method=crop_method)
    cropper = settings.cropper()
    try:
        for film_name, film in _films():
            reference = None
            for form, (suffix, data) in forms(film).items():
                path = tmp_path / f"{film_name}-{form}{suffix}"
                path.write_bytes(data)
                out, fields, _ = process_image(path, settings, cropper)
                box = [fields[f"crop_{k}"] for k in ("x0", "y0", "x1", "y1")]
                if reference is None:
                    reference = (box, out, fields["crop_method"])
                    continue
                where = f"{film_name} as {form}"
                if form == "jpeg95":  # lossy: near, measured up to 7 px and 6.6 grey levels on average
                    assert np.abs(np.subtract(box, reference[0])).max() <= 16, where
                    continue
                assert (box, fields["crop_method"]) == (reference[0], reference[2]), where
                assert np.array_equal(out, reference[1]), where
    finally:
        cropper.close()


def test_exact_placement_follows_the_hand_box_where_rounded_jumps():
    # Film 1378 (18 months): with placement rounded, a box 1 px wider makes the resized hand 81 px wide
    # instead of 80, which moves the image by a pixel and changes CLAHE's tiles: 6.2 grey levels on
    # average, and the CPU recipe's estimate by 21.6 months (docs/bad_inputs.md). Exact placement
    # scales and centres by the box itself: every 1 px move changes the input by under 2.5 levels.
    path = RAW_SAMPLE / "boneage-training-dataset" / "1378.png"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    film = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    with HandCropper("classical") as cropper:
        box = np.array(cropper(film).box)
    largest = {}
    for placement in ("rounded", "exact"):
        settings = Settings(image_size=144, placement=placement)
        reference = render_input(film, tuple(box), settings)[0].astype(float)
        moves = []
        for side in range(4):
            for step in (-1, 1):
                moved = box.copy()
                moved[side] += step
                moves.append(np.abs(render_input(film, tuple(moved), settings)[0] - reference).mean())
        largest[placement] = max(moves)
    assert largest["exact"] < 2.5 < largest["rounded"], largest
    # outside the box all is black, as with rounded: the box is taller than wide, so its sides fall
    # inside the square, at 72 -+ half its scaled width
    out = render_input(film, tuple(box), Settings(image_size=144, placement="exact"))[0]
    half = 144 / (box[3] - box[1]) * (box[2] - box[0]) / 2
    assert not out[:, : int(72 - half)].any() and not out[:, int(np.ceil(72 + half)):].any()
    assert out[:, int(72 - half) + 2: int(72 + half) - 2].mean() > 20


def test_settings_recorded_before_placement_existed_are_the_rounded_placement():
    recorded = {k: v for k, v in dataclasses.asdict(Settings(placement="exact")).items() if k != "placement"}
    assert Settings.of(recorded).placement == "rounded"
    with pytest.raises(ValueError, match="placement 'nearest' unknown"):
        render_input(np.zeros((50, 40), np.uint8), (0, 0, 40, 50), Settings(placement="nearest"))


def test_box_views_are_the_found_box_and_eight_moved_by_a_share_of_its_long_side(tmp_path):
    import pandas as pd

    from boneage.imaging.images import to_uint8
    from boneage.imaging.radiograph import moved_boxes, render_boxes, view_tensor

    assert moved_boxes((100, 50, 900, 850), 0.0, 1000, 900) == [(100, 50, 900, 850)]
    boxes = moved_boxes((100, 50, 900, 850), 0.004, 1000, 900)  # long side 800 px: moved by 3.2 -> 3 px
    assert boxes[0] == (100, 50, 900, 850) and len(set(boxes)) == 9
    assert {(b[0] - 100, b[1] - 50) for b in boxes} == {(dx, dy) for dx in (-3, 0, 3) for dy in (-3, 0, 3)}
    assert all(b[2] - b[0] == 800 and b[3] - b[1] == 800 for b in boxes)
    edge = moved_boxes((0, 0, 100, 80), 0.001, 100, 80)  # the whole film: at least 1 px, kept on the film
    assert (0, 0, 99, 79) in edge and (1, 1, 100, 80) in edge
    assert all(0 <= b[0] < b[2] <= 100 and 0 <= b[1] < b[3] <= 80 for b in edge)

    # the first view is the model input preprocess makes; cut from the source film the index records
    name, film = next(_films())
    path = tmp_path / f"{name}.png"
    cv2.imwrite(str(path), film)
    settings = Settings(image_size=64, crop_method="classical")
    with HandCropper("classical") as cropper:
        made, fields, _ = process_image(path, settings, cropper)
    box = tuple(fields[f"crop_{k}"] for k in ("x0", "y0", "x1", "y1"))
    views = render_boxes(to_uint8(film), box, settings, 0.01)  # as preprocess: the film by its own range
    assert views.shape == (9, 64, 64) and np.array_equal(views[0], made)
    assert all(not np.array_equal(view, made) for view in views[1:])
    index = pd.DataFrame([fields])
    for shift, count in ((0.0, 1), (0.01, 9)):
        tensor = view_tensor(index, settings, shift=shift)
        assert tuple(tensor.shape) == (1, count, 64, 64) and np.array_equal(tensor[0, 0].numpy(), made)
