"""Time the demo `all` from a clean clone: wall time, seconds per job, and the demo models' test MAE.

Clones the committed HEAD of this checkout into a temporary folder, runs
``snakemake --cores 8 all`` there (the README's first command) and prints the machine, the wall
time of the run, the seconds of every job from Snakemake's ``benchmark:`` files, and the test MAE
of each demo model against always predicting the training mean. Run it alone on the machine: other
load changes the figures.

    .venv/bin/python bench/demo_time.py            # reuses this checkout's .venv in the clone
    .venv/bin/python bench/demo_time.py --setup    # also times ./setup.sh into a new .venv
    .venv/bin/python bench/demo_time.py --rounding # then retrains with 1 thread per training job

``--rounding`` measures how much the demo hinges on floating-point rounding: after the default run it
trains every model again with ``--set-threads train_variant=1 --forcerun train_variant`` (one thread
sums in another order) and prints each model's test MAE in both runs, the difference, and the
ratio of its MAE before TTA and bias correction to the final one.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from boneage.results.tables import stage_times  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def timed(cmd: list[str], cwd: Path, log: Path) -> float:
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}); its output: {log}")
    return wall


def test_metrics(clone: Path) -> dict[str, dict]:
    """The test-split metrics of every evaluated model of the run in ``clone``."""
    return {p.parent.name: json.loads(p.read_text())["test"]
            for p in sorted((clone / "results" / "evaluate").glob("*/metrics.json"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", action="store_true", help="run and time ./setup.sh in the clone")
    parser.add_argument("--cores", type=int, default=8, help="snakemake --cores (the README says 8)")
    parser.add_argument("--keep", action="store_true", help="keep the clone and print where it is")
    parser.add_argument("--rounding", action="store_true",
                        help="retrain with one thread per training job and compare the test MAE")
    args = parser.parse_args()

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                           capture_output=True, text=True).stdout.strip()
    tmp = Path(tempfile.mkdtemp(prefix="boneage-demo-"))
    clone = tmp / "boneage"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}")
    print(f"clean clone of commit {commit}{' (uncommitted changes in the checkout are NOT timed)' if dirty else ''}")
    if args.setup:
        print(f"set-up (./setup.sh): {timed(['./setup.sh'], clone, tmp / 'setup.log'):.1f} s")
    else:
        (clone / ".venv").symlink_to(REPO / ".venv")
    wall = timed([str(clone / ".venv" / "bin" / "snakemake"), "--cores", str(args.cores), "all"], clone,
                 tmp / "snakemake.log")
    print(f"demo `snakemake --cores {args.cores} all`: {wall:.1f} s wall")
    jobs = stage_times(sorted((clone / "results" / "benchmarks").rglob("*.tsv")))
    print(f"\nseconds per job (Snakemake benchmark files; {jobs['seconds'].sum():.1f} s in all, "
          "jobs may overlap):")
    for row in jobs.itertuples():
        print(f"  {row.stage:<36} {row.seconds:7.1f}")
    print("\ntest MAE (months) with its 95 % bootstrap interval:")
    first = test_metrics(clone)
    for name, m in first.items():
        low, high = m["ci95"]["mae"]
        print(f"  {name:<36} {m['mae']:7.2f} [{low:.2f}, {high:.2f}]  (R2 {m['r2']:.3f}; before TTA and "
              f"correction {m['mae_raw']:.2f}, ratio {m['mae_raw'] / m['mae']:.2f}; training mean {m['baseline_mae']:.2f})")
    if args.rounding:
        wall = timed([str(clone / ".venv" / "bin" / "snakemake"), "--cores", str(args.cores), "all", "--set-threads",
                      "train_variant=1", "--forcerun", "train_variant"], clone, tmp / "snakemake_1thread.log")
        print(f"\nretrained with --set-threads train_variant=1 ({wall:.1f} s): test MAE, default -> 1 thread")
        for name, m in test_metrics(clone).items():
            print(f"  {name:<36} {first[name]['mae']:7.2f} -> {m['mae']:7.2f}  (difference {m['mae'] - first[name]['mae']:+.2f}; "
                  f"before correction {m['mae_raw']:.2f}, ratio {m['mae_raw'] / m['mae']:.2f})")
    if args.keep:
        print(f"\nclone kept at {clone}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
