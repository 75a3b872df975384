"""One estimate per hand, whatever the site: a film as another site makes it (contrast compressed
around a raised black level, another gamma) reaches the model as nearly the same input when the grey
levels are ranked inside the hand (preprocess.intensity rank), and bench/site_shift.py measures what
is left through a bundle's predict path (docs/accuracy.md, "Site shift")."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from bench.site_shift import BOX_MOVED_PX, input_changes, input_moves
from bench.site_shift import main as site_shift
from boneage.files import write_json
from boneage.imaging.demo import generate
from boneage.imaging.images import to_uint8
from boneage.imaging.intensity import rank_levels
from boneage.imaging.radiograph import Settings, render

from .conftest import RAW_SAMPLE, export_args, hand_like, untrained_model
from .test_encodings import _films

REGRADED = ("washout", "gamma0.6", "gamma1.6")
MAX_RANK_GREY = 5.0  # measured: at most 4.6 grey levels on average over a 144 px input (film 14003, gamma 1.6)


def test_ranked_intensities_give_a_regraded_film_the_same_model_input():
    if not (RAW_SAMPLE / "boneage-training-dataset").is_dir():
        pytest.skip(f"no raw films in {RAW_SAMPLE}")
    settings = {k: Settings(image_size=144, crop_method="classical", intensity=k) for k in ("minmax", "rank")}
    cropper = settings["rank"].cropper()
    try:
        for name, film in _films():
            box = cropper(to_uint8(film), None).box  # one box: what the grey levels alone do
            changes = input_changes(to_uint8(film), box, list(REGRADED), settings)
            largest = {k: max(v for (_, i), v in changes.items() if i == k) for k in settings}
            assert largest["rank"] <= MAX_RANK_GREY, (name, changes)
            # the film's own range (minmax) lets the grey-level curve through: 9.9-28 grey levels here
            assert largest["minmax"] > 2 * largest["rank"], (name, changes)
    finally:
        cropper.close()


def test_rank_levels_ignore_any_increasing_curve_and_black_out_the_background():
    rng = np.random.default_rng(0)
    img = np.zeros((64, 64))
    img[8:56, 8:56] = rng.uniform(100, 200, (48, 48))  # a "hand" (56 % of the box) on a noisy dark background
    img += rng.uniform(0, 10, img.shape)
    out = rank_levels(img)
    assert np.array_equal(out, rank_levels(0.2 * img ** 1.7 + 30)), "an increasing curve changed the ranks"
    assert out[:8].max() == 0 and out[8:56, 8:56].max() == 255
    assert np.array_equal(rank_levels(np.full((8, 8), 7.0)), np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="intensity 'log' unknown"):
        render(np.zeros((50, 40), np.uint8), (0, 0, 40, 50), Settings(intensity="log"))


def test_the_site_shift_bench_measures_each_copy_on_demo_films(tmp_path):
    generate(tmp_path / "demo", 4, seed=3)
    untrained_model(tmp_path / "model.pt")
    rest = export_args(tmp_path, tmp_path / "bundle")
    settings = dataclasses.asdict(Settings(image_size=32, crop_method="classical", intensity="rank"))
    write_json(tmp_path / "preprocess.json", {"settings": settings})
    from boneage.export import main as export

    export(["variant", "--model", str(tmp_path / "model.pt"), *rest])
    copies = ["washout", "gamma1.6", "half", "jpeg95", "box_1px", "box_2pct", "input_1px", "input_noise1"]
    site_shift(["--bundle", str(tmp_path / "bundle"), "--data", str(tmp_path / "demo"), "--copies", *copies,
                "--threads", "1", "--out-dir", str(tmp_path / "out")])
    per_film = pd.read_csv(tmp_path / "out" / "per_film.csv", dtype={"film": str})
    assert sorted(per_film["form"].unique()) == sorted(["film", *copies])
    assert (per_film.groupby("form").size() == 4).all() and per_film["change"].notna().all()
    films = per_film[per_film["form"] == "film"]
    assert (films["change"] == 0).all() and (films["error"].fillna("") == "").all()
    half = per_film[per_film["form"] == "half"]  # the box in the film's pixels: near the film's own
    assert half["box_moved_px"].max() <= BOX_MOVED_PX, half  # measured 2-5 px; unscaled it would be ~half the box
    summary = (tmp_path / "out" / "summary.md").read_text()
    for copy in copies:
        assert f"| {copy} " in summary


def test_the_network_alone_forms_move_the_found_input_by_a_film_pixel_or_a_grey_level():
    views = hand_like(seed=1, size=(32, 32))[None]
    made = input_moves(views, 0.5, np.random.default_rng(0))  # a film pixel is half an input pixel
    assert [len(made[k]) for k in ("input_1px", "input_noise1")] == [8, 8]
    for moved in made["input_1px"]:
        diff = np.abs(moved.astype(int) - views)[:, 2:-2, 2:-2]  # away from the border the sampler fills
        assert moved.shape == views.shape and 0 < diff.mean() and diff.max() < 255 // 2
    grey = np.full((1, 32, 32), 128, np.uint8)  # no level at an end, where the noise is clipped
    for noisy in input_moves(grey, 0.5, np.random.default_rng(0))["input_noise1"]:
        diff = noisy.astype(int) - grey
        assert np.abs(diff).max() == 1 and 0.6 < (diff != 0).mean() < 0.73  # -1, 0, +1 alike
