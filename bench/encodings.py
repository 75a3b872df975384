"""One film, every encoding: the same radiograph as 8-bit PNG (the reference), 16-bit PNG, JPEG and
DICOM (12-bit MONOCHROME2, 16-bit MONOCHROME1, with a VOI window, rescaled), each through the
project's preprocessing (read, window to 8 bit, hand check, crop, CLAHE, resize), and, given a bundle,
its estimate as `python -m boneage.predict` gives it (the bundle's own preprocessing settings,
test-time views and bias correction; the sex from --labels, else female for every form). Prints per
form the largest crop-box difference (pixels of the source film), the mean absolute difference of the
model input (grey levels), and the largest estimate difference (months) from the 8-bit PNG's.

    python bench/encodings.py --films ../shared/data/rsna-raw-sample/boneage-training-dataset [--demo N]
        [--bundle results/bundles/resnet18 --labels ../shared/data/rsna-raw-sample/boneage-training-dataset.csv]
        [--limit K] [--out encodings.csv]
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

from boneage.imaging.crop import HandCropper  # noqa: E402
from boneage.imaging.encodings import forms  # noqa: E402
from boneage.imaging.images import ImageError  # noqa: E402
from boneage.imaging.radiograph import Settings, process_image  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--films", default=None, help="a folder of 8-bit films (PNG)")
    parser.add_argument("--demo", type=int, default=0, help="also N demo films (seed 3)")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--crop-method", default=Settings.crop_method)
    parser.add_argument("--bundle", default=None, help="a bundle: also each form's estimate, with its preprocessing")
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
    settings = Settings(crop_method=args.crop_method)
    if args.bundle:
        from boneage.results.bundle import Bundle

        settings = Settings.of(Bundle.load(args.bundle).spec["preprocess"])
    cropper = HandCropper(settings.crop_method, settings.crop_margin, settings.hand_model,
                          settings.mediapipe_renderings)
    rows, written = [], {}
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
            rows.append(row)
        print(film_path.name, *(f"{r['form']}:{r.get('box_diff_px', 'x')}" for r in rows[-7:]), flush=True)
    cropper.close()  # MediaPipe's graph, before the interpreter's exit tears down what closing it needs
    table = pd.DataFrame(rows)
    if args.bundle:
        table = table.merge(estimates(written, work / "predict", args), on=["film", "form"], how="left")
        table["estimate_diff"] = table["estimate"] - table["film"].map(
            table[table["form"] == "png8"].set_index("film")["estimate"])
    if args.out:
        table.drop(columns=["box"], errors="ignore").to_csv(args.out, index=False)
    agg = {"films": ("film", "size"), "box_diff_px_max": ("box_diff_px", "max"),
           "input_mad_max": ("input_mad", "max")}
    if "refused" in table:
        agg["refused"] = ("refused", "count")
    if args.bundle:
        table["abs_estimate_diff"] = table["estimate_diff"].abs()
        agg["estimate_diff_max"] = ("abs_estimate_diff", "max")
    print(table.groupby("form", sort=False).agg(**agg).round(2).to_string())


def estimates(written: dict[Path, tuple[str, str]], out_dir: Path, args) -> pd.DataFrame:
    """Each written form's estimate through boneage.predict's path: film, form, estimate."""
    from boneage.results.estimates import predict_files

    sex = {}
    if args.labels:
        labels = pd.read_csv(args.labels, dtype={"id": str})
        sex = dict(zip(labels["id"], labels["male"].astype(float)))
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
