"""Site shift: how far a bundle's estimates move when the same films come as another site makes them.

Each film is also written as copies a user meets in practice, made from the film as it came (8 bit):
``washout`` (contrast to 40 % of the range, black level raised to 15 %), ``gamma0.6`` and
``gamma1.6`` (grey-level curve), ``overexposed`` (the brightest 5 % of pixels clipped: the film's 95th
percentile grey level to white), ``jpeg75`` and ``jpeg95``, ``half`` and ``double`` (a second
resolution). Every copy and the film itself (as 8-bit PNG: the reference) go through the bundle's own
predict path (``python -m boneage.predict``: its hand crop, preprocessing, test-time views, bias
correction; the films' sex from their labels). Four more rows start from the hand box the film's own
predict found: ``box_1px`` (each side by 1 px, each way: 8 cuts, the change of largest size per film) and
``box_2pct`` (the box moved by 2 % of its long side right and down), each estimated by the bundle as
predict estimates a film; and two that leave the rendering out, the found box's model input itself
moved by a film pixel (``input_1px``) or given a grey level of noise (``input_noise1``): the network
alone (:func:`input_moves`).

Per copy, against the film's own estimate (paired): MAE (with labels), the change of MAE and the mean
signed change with 95 % bootstrap intervals, the median and largest per-film change, and how many
films had their hand box moved by more than 10 px (of the source film) or another crop method.

    python bench/site_shift.py --bundle results/bundles/resnet18_sex --data results/data/demo [--limit 40]
    python bench/site_shift.py --bundle B --index results/preprocess/index.parquet --split results/split/split.csv
    python bench/site_shift.py --bundle B --data ../shared/data/rsna-raw-sample --out-dir site_shift

Writes ``--out-dir``/per_film.csv and summary.md (the table docs/accuracy.md quotes) and prints it.

Without a bundle, ``--inputs SIZE`` compares model inputs instead of estimates: each copy's (the grey
level copies, the film's own box, classical crop) against the film's, the mean absolute difference in
grey levels per film, median and largest per copy, for each ``preprocess.intensity``:

    python bench/site_shift.py --inputs 144 --data ../shared/data/rsna-raw-sample
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from boneage.imaging.images import inside, read_grey, to_uint8, write_png  # noqa: E402
from boneage.imaging.intensity import INTENSITIES  # noqa: E402
from boneage.imaging.layout import IMAGE_DIR, LABELS_CSV  # noqa: E402
from boneage.imaging.radiograph import BOX, Settings, render, render_boxes, side_moves  # noqa: E402
from boneage.results.uncertainty import Bootstrap, mean_interval, paired_difference  # noqa: E402

BOX_MOVED_PX = 10  # a hand box that moved by more than this (px of the source film) is counted
BOX_BATCH = 256  # moved-box cuts rendered before they are predicted (each K box views of S x S)


def _grey(curve):
    return lambda img: np.rint(curve(img.astype(np.float64) / 255.0) * 255).clip(0, 255).astype(np.uint8)


def _overexposed(img: np.ndarray) -> np.ndarray:
    white = max(float(np.percentile(img, 95)), 1.0)
    return np.rint(np.minimum(img * (255.0 / white), 255)).astype(np.uint8)


def _scaled(factor: float):
    interp = cv2.INTER_AREA if factor < 1 else cv2.INTER_CUBIC
    return lambda img: cv2.resize(img, None, fx=factor, fy=factor, interpolation=interp)


# name -> (suffix, the copy of an 8-bit film); the JPEGs carry their quality instead
COPIES = {
    "washout": (".png", _grey(lambda x: 0.15 + 0.40 * x)),
    "gamma0.6": (".png", _grey(lambda x: x ** 0.6)),
    "gamma1.6": (".png", _grey(lambda x: x ** 1.6)),
    "overexposed": (".png", _overexposed),
    "jpeg75": (".jpg", 75),
    "jpeg95": (".jpg", 95),
    "half": (".png", _scaled(0.5)),
    "double": (".png", _scaled(2.0)),
}
# forms made from the film's own hand box: moved boxes, rendered again; and the found box's model input
# itself moved by a film pixel or given a grey level of noise, not rendered again (the network alone)
BOX_MOVES = ("box_1px", "box_2pct", "input_1px", "input_noise1")
GREY_CURVES = ("washout", "gamma0.6", "gamma1.6", "overexposed")  # the copies that change grey levels alone


def write_copies(film_id: str, img: np.ndarray, out: Path, names=tuple(COPIES)) -> dict[Path, tuple[str, str]]:
    """The 8-bit film ``img`` as PNG (form ``film``) and as each copy in ``names``, written to ``out``:
    path -> (film id, form)."""
    written = {}
    path = inside(out, f"{film_id}__film.png")  # ids come from a label table: no path from them
    write_png(path, img)
    written[path] = (film_id, "film")
    for name in names:
        suffix, make = COPIES[name]
        path = inside(out, f"{film_id}__{name}{suffix}")
        if suffix == ".jpg":
            path.write_bytes(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, make])[1].tobytes())
        else:
            write_png(path, make(img))
        written[path] = (film_id, name)
    return written


def films_of(args) -> pd.DataFrame:
    """id, path, boneage, male of the films to read: an RSNA-layout folder, or the test split of a run."""
    if args.index:
        index = pd.read_parquet(args.index).astype({"id": str})
        split = pd.read_csv(args.split, dtype={"id": str})
        rows = index[index["id"].isin(split.loc[split["subset"] == args.subset, "id"])]
        table = pd.DataFrame({"id": rows["id"], "path": rows["source_file"], "boneage": rows["boneage"],
                              "male": rows["male"].astype(float)})
    else:
        data = Path(args.data)
        labels = pd.read_csv(data / LABELS_CSV, dtype={"id": str})
        paths = {p.stem: p for p in (data / IMAGE_DIR).iterdir() if p.is_file()}
        labels = labels[labels["id"].isin(paths)]
        table = pd.DataFrame({"id": labels["id"], "path": labels["id"].map(paths).astype(str),
                              "boneage": labels["boneage"].astype(float),
                              "male": labels["male"].map(lambda m: float(str(m).lower() in ("true", "1")))})
    table = table.sort_values("id").reset_index(drop=True)
    if args.limit and len(table) > args.limit:  # an even sample over the sorted ids, the same each run
        table = table.iloc[np.linspace(0, len(table) - 1, args.limit).round().astype(int)].reset_index(drop=True)
    return table


def input_moves(views: np.ndarray, film_px: float, rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    """The model inputs ``views`` (K, S, S) of a film's found box, not rendered again: ``input_1px``
    moved by one and by half a film pixel (``film_px`` input px) left, right, up and down (8, bilinear),
    ``input_noise1`` with -1, 0 or +1 grey level added to each pixel (8 draws). Beside ``box_1px`` they
    tell the rendering from the network: a network that reads a sub-pixel move or rounding noise as
    months moves as far under them as under a moved box."""
    shifts = [(sx * f * film_px, sy * f * film_px) for f in (1.0, 0.5) for sx, sy in ((1, 0), (-1, 0), (0, 1), (0, -1))]
    moved = [np.stack([cv2.warpAffine(v, np.float32([[1, 0, dx], [0, 1, dy]]), v.shape[::-1], flags=cv2.INTER_LINEAR)
                       for v in views]) for dx, dy in shifts]
    noisy = [np.clip(views.astype(np.int16) + rng.integers(-1, 2, views.shape), 0, 255).astype(np.uint8) for _ in range(8)]
    return {"input_1px": moved, "input_noise1": noisy}


def box_estimates(table: pd.DataFrame, films: pd.DataFrame, bundle, settings: Settings) -> pd.DataFrame:
    """Rows (film, form, estimate, reference) for each of :data:`BOX_MOVES`: moved boxes rendered from
    the film's PNG as predict renders it, and the found box's input moved (:func:`input_moves`); the
    reference is the estimate of the found box rendered the same way."""
    import torch

    found = table[table["form"] == "film"].set_index("film")
    keys, images, male, pred = [], [], [], []
    rng = np.random.default_rng(0)  # the grey-level noise of input_noise1

    def flush():  # predict what is rendered: memory bounded by BOX_BATCH cuts, not by the films
        if images:
            pred.extend(bundle.predict(torch.from_numpy(np.stack(images)), torch.tensor(male, dtype=torch.float32)))
            images.clear()
            male.clear()

    for film in films.itertuples():
        if film.id not in found.index or found.loc[film.id, "error"]:
            continue
        img = to_uint8(read_grey(Path(found.loc[film.id, "source_file"])))
        box = [int(found.loc[film.id, c]) for c in BOX]
        long_side = max(box[2] - box[0], box[3] - box[1])
        step = max(1, round(0.02 * long_side))
        moved = {"box_1px": side_moves(box, 1, img.shape[1], img.shape[0]),
                 "box_2pct": [(min(box[0] + step, img.shape[1]), min(box[1] + step, img.shape[0]),
                               min(box[2] + step, img.shape[1]), min(box[3] + step, img.shape[0]))]}
        found_views = render_boxes(img, box, settings, bundle.box_shift)
        made = {"box_found": [found_views],
                **{form: [render_boxes(img, cut, settings, bundle.box_shift) for cut in cuts] for form, cuts in moved.items()},
                **input_moves(found_views, settings.image_size / long_side, rng)}
        for form, views in made.items():
            for image in views:
                keys.append((film.id, form))
                images.append(image)
                male.append(film.male)
        if len(images) >= BOX_BATCH:
            flush()
    flush()
    rows = pd.DataFrame({"film": [k[0] for k in keys], "form": [k[1] for k in keys], "estimate": np.array(pred)})
    base = rows[rows["form"] == "box_found"].set_index("film")["estimate"]
    rows["reference"] = rows["film"].map(base)
    rows = rows[rows["form"] != "box_found"]
    # per film and form the cut whose estimate moved most (of 8 for all but box_2pct)
    return rows.loc[(rows["estimate"] - rows["reference"]).abs().groupby([rows["film"], rows["form"]]).idxmax()]


def input_changes(img: np.ndarray, box, copies: list[str], settings: dict[str, Settings]) -> dict[tuple, float]:
    """(copy, intensity) -> the mean absolute grey-level difference of the model input of copy
    ``copy`` of the 8-bit film ``img`` from the film's own, both cut with ``box``, for each of
    ``settings`` (intensity -> preprocessing settings)."""
    out = {}
    for intensity, s in settings.items():
        ref = render(img, box, s)[0].astype(np.float64)
        for name in copies:
            out[name, intensity] = float(np.abs(render(to_uint8(COPIES[name][1](img)), box, s)[0] - ref).mean())
    return out


def input_shift(films: pd.DataFrame, size: int, copies: list[str]) -> pd.DataFrame:
    """Median and largest :func:`input_changes` of each copy over ``films``, per intensity (the
    film's own box, classical crop: what the grey levels alone do)."""
    settings = {k: Settings(image_size=size, crop_method="classical", intensity=k) for k in INTENSITIES}
    cropper, rows = settings["minmax"].cropper(), []
    for film in films.itertuples():
        img = to_uint8(read_grey(Path(film.path)))
        changes = input_changes(img, cropper(img, None).box, copies, settings)
        rows += [{"copy": c, "intensity": i, "grey": v} for (c, i), v in changes.items()]
    cropper.close()
    table = pd.DataFrame(rows).groupby(["copy", "intensity"], sort=False)["grey"].agg(["median", "max"])
    return table.unstack("intensity").round(2)


def summarise(per_film: pd.DataFrame, bootstrap: Bootstrap) -> pd.DataFrame:
    """One row per form: the paired figures against each film's own estimate (module docstring)."""
    rows = []
    for form, g in per_film[per_film["form"] != "film"].groupby("form", sort=False):
        g = g.dropna(subset=["change"])
        if g.empty:
            continue
        err_copy, err_film = (g["estimate"] - g["boneage"]).abs(), (g["reference"] - g["boneage"]).abs()
        d_mae, d_lo, d_hi = paired_difference(err_copy, err_film, bootstrap)
        s, s_lo, s_hi = mean_interval(g["change"], bootstrap)
        worst = g.loc[g["change"].abs().idxmax()]
        rows.append({"copy": form, "films": len(g), "MAE": round(err_copy.mean(), 2),
                     "MAE change [95 % CI]": f"{d_mae:+.2f} [{d_lo:+.2f}, {d_hi:+.2f}]",
                     "mean signed change [95 % CI]": f"{s:+.2f} [{s_lo:+.2f}, {s_hi:+.2f}]",
                     "median |change|": round(g["change"].abs().median(), 2),
                     "largest |change| (film)": f"{abs(worst['change']):.2f} ({worst['film']})",
                     f"box moved > {BOX_MOVED_PX} px": int((g["box_moved_px"] > BOX_MOVED_PX).sum()),
                     "other crop method": int(g["crop_changed"].sum())})
    return pd.DataFrame(rows)


def compare_to_films(table: pd.DataFrame, written: dict, films: pd.DataFrame, bundle,
                     copies: list[str]) -> pd.DataFrame:
    """Per film and form: predict's ``table`` of the ``written`` files (and the moved boxes among
    ``copies``) with each estimate's change from the film's own, how far its hand box moved (in px of
    the film) and whether the crop method changed."""
    names = {p.stem: v for p, v in written.items()}
    table = table.assign(film=[names[i][0] for i in table["id"]], form=[names[i][1] for i in table["id"]],
                         estimate=table["boneage_months"], error=table["error"].fillna(""))
    per_film = table[["film", "form", "estimate", "crop_method", "error", "source_file", *BOX]].assign(reference=np.nan)
    if any(c in BOX_MOVES for c in copies):
        moved = box_estimates(table, films, bundle, Settings.of(bundle.spec["preprocess"]))
        per_film = pd.concat([per_film, moved[moved["form"].isin(copies)]], ignore_index=True)
    ref = per_film[per_film["form"] == "film"].set_index("film")
    per_film["reference"] = per_film["reference"].fillna(per_film["film"].map(ref["estimate"]))
    per_film["change"] = per_film["estimate"] - per_film["reference"]
    per_film["boneage"] = per_film["film"].map(films.set_index("id")["boneage"])
    scale = {"half": 2.0, "double": 0.5}  # the copy's box in px of the film
    box = per_film[list(BOX)].astype(float).mul(per_film["form"].map(scale).fillna(1.0), axis=0)
    ref_box = ref[list(BOX)].astype(float).reindex(per_film["film"]).to_numpy()
    per_film["box_moved_px"] = np.abs(box.to_numpy() - ref_box).max(axis=1)
    per_film["crop_changed"] = per_film["crop_method"].notna() & (
        per_film["crop_method"] != per_film["film"].map(ref["crop_method"]))
    return per_film


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", help="a bundle folder (results/bundles/<model>)")
    parser.add_argument("--inputs", type=int, default=0, metavar="SIZE",
                        help="no bundle: the model inputs of the grey-level copies at this size, per intensity")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="an RSNA-layout folder (labels csv + images)")
    source.add_argument("--index", help="a run's results/preprocess/index.parquet (with --split: its test films)")
    parser.add_argument("--split", help="the run's results/split/split.csv (with --index)")
    parser.add_argument("--subset", default="test", choices=("train", "val", "test"))
    parser.add_argument("--limit", type=int, default=0, help="at most N films, evenly over the sorted ids")
    parser.add_argument("--copies", nargs="+", default=list(COPIES) + list(BOX_MOVES),
                        choices=list(COPIES) + list(BOX_MOVES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out-dir", default=None, help="per_film.csv and summary.md (default: a temporary folder)")
    args = parser.parse_args(argv)
    if args.index and not args.split:
        parser.error("--index needs --split")
    if args.inputs:
        curves = [c for c in args.copies if c in GREY_CURVES]
        print(input_shift(films_of(args), args.inputs, curves).to_markdown())
        return
    if not args.bundle:
        parser.error("give --bundle (estimates) or --inputs SIZE (model inputs)")
    from boneage.results.estimates import predict_files

    out = Path(args.out_dir or tempfile.mkdtemp(prefix="site_shift."))
    (out / "films").mkdir(parents=True, exist_ok=True)
    films = films_of(args)
    written = {}
    for film in films.itertuples():
        img = to_uint8(read_grey(Path(film.path)))
        written.update(write_copies(film.id, img, out / "films", [c for c in args.copies if c in COPIES]))
    sex = out / "sex.csv"
    pd.DataFrame({"id": [p.stem for p in written],
                  "male": films.set_index("id").loc[[f for f, _ in written.values()], "male"].to_numpy()}
                 ).to_csv(sex, index=False)
    table, bundle = predict_files([str(p) for p in written], sex, Path(args.bundle), out / "predict", "cpu",
                                  args.threads)
    per_film = compare_to_films(table, written, films, bundle, args.copies)
    per_film.drop(columns=["source_file"]).to_csv(out / "per_film.csv", index=False)
    ref = per_film[per_film["form"] == "film"].set_index("film")
    summary = summarise(per_film, Bootstrap())
    film_mae = (ref["estimate"] - films.set_index("id")["boneage"].reindex(ref.index)).abs().mean()
    text = (f"bundle {args.bundle}: {len(ref)} films, MAE of the films themselves {film_mae:.2f} months\n\n"
            + summary.to_markdown(index=False) + "\n")
    (out / "summary.md").write_text(text)
    print(text + f"\n(per film: {out / 'per_film.csv'})")


if __name__ == "__main__":
    main()
