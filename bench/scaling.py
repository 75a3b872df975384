"""How each stage's time and memory grow with the number of films.

For each N, runs the pipeline (``snakemake all``, the CPU recipe ``configs/rsna-cpu.yaml`` with
``--epochs`` epochs and ``--retakes`` test-retest retakes) on the first N films of a seeded
permutation of an RSNA-layout folder (``--data``, default ``../shared/data/rsna-train-299``; the
films are linked, not copied), each N in its own work folder, and prints per stage the wall time,
the time per film and the peak RSS from Snakemake's benchmark files; ``--markdown`` also writes the
table. Sizes above the folder's films are made from them: film ``k`` beyond the folder's own is a link to
film ``k mod M`` of the permutation under its own id ``<id>x<copy>`` with the same label, so every stage
does a real film's work for it (the split does not know the copies share pixels: fine for timing,
meaningless for accuracy). Run it alone on the machine.

    .venv/bin/python bench/scaling.py --films 300 1200 4800 12611 --work /tmp/scaling
    .venv/bin/python bench/scaling.py --films 300 1200 4800 12611 --work /tmp/scaling --reuse --plot docs/scaling.png
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from boneage.imaging.layout import IMAGE_DIR, LABELS_CSV, resolve_layout  # noqa: E402


def repeated_ids(ids, n: int) -> tuple[np.ndarray, list[str]]:
    """``n`` films drawn from the M ``ids`` in order, repeating past the end: each one's position in
    ``ids`` (``k mod M``) and its own id (``ids[k]``, then ``<id>x<k // M>`` for the copies)."""
    ids = np.asarray(ids).astype(str)
    k = np.arange(n)
    at = k % len(ids)
    return at, [str(i) if c == 0 else f"{i}x{c}" for i, c in zip(ids[at], k // len(ids))]


def subset(data: Path, n: int, out: Path, seed: int = 0) -> int:
    """An RSNA-layout folder of ``n`` films of ``data`` (symlinks), the first of a seeded permutation.

    Above the folder's M films, film ``k`` links to film ``k mod M`` of the permutation under the id
    ``<id>x<k // M>`` (same label and sex).
    """
    layout = resolve_layout(data)
    labels = pd.read_csv(layout.labels_csv, dtype={"id": str})
    files = {p.stem: p for p in layout.image_dir.iterdir() if p.is_file()}
    labels = labels[labels["id"].isin(files)].reset_index(drop=True)
    order = np.random.default_rng(seed).permutation(len(labels))
    at, ids = repeated_ids(labels["id"].to_numpy()[order], n)
    copies = labels.iloc[order[at[len(labels):]]].assign(id=ids[len(labels):])
    origin = dict(zip(copies["id"], labels["id"].to_numpy()[order[at[len(labels):]]]))
    chosen = pd.concat([labels.iloc[np.sort(order[:n])], copies])
    (out / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
    for image_id in chosen["id"]:
        source = files[origin.get(image_id, image_id)]
        link = out / IMAGE_DIR / (image_id + source.suffix)
        if not link.exists():
            link.symlink_to(source.resolve())
    chosen.to_csv(out / LABELS_CSV, index=False)
    return len(chosen)


def stages(workdir: Path) -> pd.DataFrame:
    """Seconds and peak RSS per stage (summed over a stage's jobs) from the benchmark files."""
    rows = []
    for tsv in sorted((workdir / "results" / "benchmarks").rglob("*.tsv")):
        b = pd.read_csv(tsv, sep="\t").iloc[0]
        rows.append({"stage": tsv.parent.name, "s": float(b["s"]), "max_rss_mb": float(b["max_rss"])})
    table = pd.DataFrame(rows)
    return table.groupby("stage").agg(s=("s", "sum"), max_rss_mb=("max_rss_mb", "max")).reset_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--films", type=int, nargs="+", default=[300, 1200])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "rsna-train-299"))
    parser.add_argument("--work", default="scaling")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--retakes", type=int, default=2)
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--markdown", default=None, help="also write the table here")
    parser.add_argument("--plot", default=None, help="also draw ms per film against N (log-log) into this PNG")
    parser.add_argument("--reuse", action="store_true",
                        help="read the work folders of an earlier run instead of running again")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {args.cores} cores")
    tables = []
    for n in args.films:
        workdir = Path(args.work).resolve() / f"n{n}"
        films = subset(Path(args.data), n, workdir / "data")
        overlay = workdir / "scaling.yaml"
        overlay.write_text(f"data_dir: {workdir / 'data'}\nepochs: {args.epochs}\n"
                           f"evaluate: {{stability_views: {args.retakes}}}\npreprocess: {{max_reject_fraction: 0.05}}\n")
        start = time.perf_counter()
        reused = args.reuse and (workdir / "results" / "report" / "index.html").is_file()
        if not reused:
            subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory",
                            str(workdir), "all", "--cores", str(args.cores), "--configfile",
                            str(REPO / "configs" / "rsna-cpu.yaml"), str(overlay)], check=True, capture_output=True)
        wall = time.perf_counter() - start
        table = stages(workdir).assign(films=films)
        table["ms_per_film"] = 1000 * table["s"] / films
        tables.append(table)
        print(f"\n{films} films: " + ("(an earlier run's benchmark files)" if reused else f"`all` {wall:.0f} s wall"))
        for r in table.itertuples():
            print(f"  {r.stage:10s} {r.s:8.1f} s  {r.ms_per_film:8.2f} ms/film  peak RSS {r.max_rss_mb:7.0f} MB", flush=True)
    wide = pd.concat(tables).pivot(index="stage", columns="films", values="ms_per_film")
    print("\nms per film, by stage and N:\n" + wide.round(2).to_string())
    if args.markdown:
        Path(args.markdown).write_text(pd.concat(tables).round(2).to_markdown(index=False) + "\n")
    if args.plot:
        plot(wide, Path(args.plot))


def plot(wide: pd.DataFrame, path: Path) -> None:
    """ms per film of each stage against N, log-log: a flat line is a cost linear in N."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for stage, row in wide.iterrows():
        ax.plot(row.index, row.values, marker="o", label=stage)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("films")
    ax.set_ylabel("ms per film")
    ax.set_title("Time per film of each stage (flat = linear in N)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
