"""One film, every encoding: the same radiograph as 8-bit PNG (the reference), 16-bit PNG, JPEG and
DICOM (12-bit MONOCHROME2, 16-bit MONOCHROME1, with a VOI window, rescaled), each through the
project's preprocessing (read, window to 8 bit, hand check, crop, CLAHE, resize), and, given a bundle,
its estimate as `python -m boneage.predict` gives it (the bundle's own preprocessing settings,
test-time views and bias correction; the sex from --labels, else female for every form). Prints per
form the largest crop-box difference (pixels of the source film), the mean absolute difference of the
model input (grey levels), and the largest estimate difference (months) from the 8-bit PNG's; with a
bundle also ``pixels_only``: the form's pixels cut with the 8-bit PNG's own box, which separates what
a lossy form's pixels move from what its (moved) hand box moves. The row ``box_1px`` is the yardstick:
the 8-bit PNG with one side of its own box moved by 1 px (each side, each way: 8 cuts), the largest
change of model input and estimate over those. A bundle with box views (its ``box_shift``) gives
each of these cuts the mean over its 9 boxes, as predict does (``--box-shift`` overrides it).

    python bench/encodings.py --films ../shared/data/rsna-raw-sample/boneage-training-dataset [--demo N]
        [--bundle results/bundles/resnet18 --labels ../shared/data/rsna-raw-sample/boneage-training-dataset.csv]
        [--limit K] [--out encodings.csv]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from boneage.imaging.encodings import forms  # noqa: E402
from boneage.imaging.images import ImageError, read_grey, to_uint8  # noqa: E402
from boneage.imaging.radiograph import PLACEMENTS, Settings, process_image, render_boxes, side_moves  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--films", default=None, help="a folder of 8-bit films (PNG)")
    parser.add_argument("--demo", type=int, default=0, help="also N demo films (seed 3)")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--crop-method", default=Settings.crop_method)
    parser.add_argument("--image-size", type=int, default=Settings.image_size, help="without --bundle")
    parser.add_argument("--placement", default=None, choices=PLACEMENTS,
                        help="how the box goes onto the square (default: the bundle's, else rounded)")
    parser.add_argument("--bundle", default=None, help="a bundle: also each form's estimate, with its preprocessing")
    parser.add_argument("--box-shift", type=float, default=None,
                        help="box views of the estimates (default: the bundle's; 0 = the box alone)")
    parser.add_argument("--labels", default=None, help="id,male (the Kaggle CSV): the films' sex for the estimates")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="per film and form, as CSV")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="encodings."))
    films = sorted(Path(args.films).glob("*.png")) if args.films else []
    if args.demo:
        from boneage.imaging.demo import generate

        generate(work / "demo", args.demo, seed=3)
        films += sorted((work / "demo").rglob("*.png"))
    if args.limit:
        films = films[: args.limit]
    settings, bundle, sex = Settings(image_size=args.image_size, crop_method=args.crop_method), None, sexes(args)
    if args.bundle:
        from boneage.results.bundle import Bundle

        bundle = Bundle.load(args.bundle)
        settings = Settings.of(bundle.spec["preprocess"])
    if args.placement:
        settings = replace(settings, placement=args.placement)
    shift = args.box_shift if args.box_shift is not None else bundle.box_shift if bundle else 0.0
    if bundle is not None and shift != bundle.box_shift:  # a copy of the bundle whose bundle.json says so
        args.bundle = str(with_box_shift(Path(args.bundle), shift, work / "bundle"))
        bundle = Bundle.load(args.bundle)
    cropper = settings.cropper()
    rows, written, same_box, moved = [], {}, {}, {}
    for film_path in films:
        film = cv2.imread(str(film_path), cv2.IMREAD_GRAYSCALE)
        ref = None
        for name, (suffix, data) in forms(film).items():
            path = work / f"{film_path.stem}_{name}{suffix}"
            path.write_bytes(data)
            written[path] = (film_path.name, name)
            row = {"film": film_path.name, "form": name}
            try:
                out, fields, _ = process_image(path, settings, cropper)
            except ImageError as exc:
                rows.append({**row, "refused": str(exc)})
                continue
            box = np.array([fields[f"crop_{k}"] for k in ("x0", "y0", "x1", "y1")])
            row.update(crop_method=fields["crop_method"], box=box)
            if name == "png8":
                ref = (box, out)
            if ref is not None:
                row["box_diff_px"] = int(np.abs(box - ref[0]).max())
                row["input_mad"] = float(np.abs(out.astype(float) - ref[1]).mean()) if out.shape == ref[1].shape else np.nan
                same_box[film_path.name, name] = render_boxes(to_uint8(read_grey(path, data)), ref[0], settings, shift)
            rows.append(row)
        if ref is not None:
            rows.append(box_moves(film_path.name, to_uint8(film), ref, settings, shift, moved))
        print(film_path.name, *(f"{r['form']}:{r.get('box_diff_px', 'x')}" for r in rows[-8:]), flush=True)
    cropper.close()  # MediaPipe's graph, before the interpreter's exit tears down what closing it needs
    table = pd.DataFrame(rows)
    if bundle is not None:
        table = table.merge(estimates(written, work / "predict", args, sex), on=["film", "form"], how="left")
        reference = table["film"].map(table[table["form"] == "png8"].set_index("film")["estimate"])
        table["estimate_diff"] = table["estimate"] - reference
        found = bundle_estimates({**same_box, **moved}, bundle, sex)
        table["pixels_only"] = np.array([found.get(k, np.nan) for k in zip(table["film"], table["form"])]) - reference
        shifted = table["form"] == "box_1px"
        table.loc[shifted, "estimate_diff"] = [max((found[k] - ref for k in moved if k[0] == film), key=abs)
                                               for film, ref in zip(table.loc[shifted, "film"], reference[shifted])]
    if args.out:
        table.drop(columns=["box"], errors="ignore").to_csv(args.out, index=False)
    agg = {"films": ("film", "size"), "box_diff_px_max": ("box_diff_px", "max"),
           "input_mad_max": ("input_mad", "max")}
    if "refused" in table:
        agg["refused"] = ("refused", "count")
    if bundle is not None:
        table["abs_estimate_diff"] = table["estimate_diff"].abs()
        table["abs_pixels_only"] = table["pixels_only"].abs()
        agg["estimate_diff_max"] = ("abs_estimate_diff", "max")
        agg["estimate_diff_median"] = ("abs_estimate_diff", "median")
        agg["pixels_only_max"] = ("abs_pixels_only", "max")
    print(table.groupby("form", sort=False).agg(**agg).round(2).to_string())


def with_box_shift(bundle: Path, shift: float, out: Path) -> Path:
    """A copy of the bundle folder ``bundle`` in ``out`` with box views ``shift`` (its bundle.json's
    ``box_shift``; the weights as they are)."""
    import shutil

    from boneage.files import read_json, write_json

    shutil.copytree(bundle, out)
    write_json(out / "bundle.json", {**read_json(out / "bundle.json"), "box_shift": shift})
    return out


def sexes(args) -> dict[str, float]:
    """Film id -> male (1.0 / 0.0) from --labels; empty without it (every film then a girl)."""
    if not args.labels:
        return {}
    labels = pd.read_csv(args.labels, dtype={"id": str})
    return dict(zip(labels["id"], labels["male"].astype(float)))


def box_moves(film: str, img: np.ndarray, ref: tuple, settings: Settings, shift: float, moved: dict) -> dict:
    """The row ``box_1px`` of ``film`` (8-bit pixels ``img``, reference box and model input ``ref``):
    each of the 8 cuts with one side of the box moved by 1 px (its box views with ``shift``) goes
    into ``moved`` under (film, k)."""
    box, out = ref
    mad = 0.0
    for k, cut in enumerate(side_moves(box, 1, img.shape[1], img.shape[0])):
        moved[film, k] = render_boxes(img, cut, settings, shift)
        mad = max(mad, float(np.abs(moved[film, k][0].astype(float) - out).mean()))
    return {"film": film, "form": "box_1px", "box_diff_px": 1, "input_mad": mad}


def bundle_estimates(images: dict[tuple, np.ndarray], bundle, sex: dict[str, float]) -> dict[tuple, float]:
    """The bundle's estimate for each model input in ``images`` (key: (film, ...)), as predict would
    give it for that input: test-time views, bias correction, the film's sex from ``sex``."""
    import torch

    keys = list(images)
    male = torch.tensor([sex.get(Path(key[0]).stem, 0.0) for key in keys], dtype=torch.float32)
    return dict(zip(keys, bundle.predict(torch.from_numpy(np.stack([images[k] for k in keys])), male)))


def estimates(written: dict[Path, tuple[str, str]], out_dir: Path, args, sex: dict[str, float]) -> pd.DataFrame:
    """Each written form's estimate through boneage.predict's path (which loads the bundle itself):
    film, form, estimate."""
    from boneage.results.estimates import predict_files

    out_dir.mkdir()
    csv = out_dir / "sex.csv"
    pd.DataFrame({"id": [p.stem for p in written],
                  "male": [sex.get(Path(film).stem, 0.0) for film, _ in written.values()]}).to_csv(csv, index=False)
    table, _ = predict_files([str(p) for p in written], csv, Path(args.bundle), out_dir, "cpu", args.threads)
    names = {p.stem: film_form for p, film_form in written.items()}
    return pd.DataFrame({"film": [names[i][0] for i in table["id"]], "form": [names[i][1] for i in table["id"]],
                         "estimate": table["boneage_months"].to_numpy()})


if __name__ == "__main__":
    main()
