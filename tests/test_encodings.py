"""One film, every encoding, one model input: the same radiograph as 8-bit PNG, 16-bit PNG, JPEG and
DICOM (12-bit MONOCHROME2, 16-bit MONOCHROME1, with a VOI window, rescaled) gets the same crop box and
the same preprocessed pixels, so every model gives it the same estimate. Demo films and raw films from
../shared (the measured table over all 20 raw films: docs/bad_inputs.md, bench/encodings.py)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from boneage.imaging.crop import HandCropper
from boneage.imaging.demo import render
from boneage.imaging.encodings import forms
from boneage.imaging.radiograph import Settings, process_image

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
    cropper = HandCropper(settings.crop_method, settings.crop_margin, settings.hand_model,
                          settings.mediapipe_renderings)
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
