"""Stage 6, export: trained variants and the ensemble as model bundles (``results/bundles/``).

A bundle is the one folder that predicting needs (format: :mod:`boneage.results.bundle`).

    python -m boneage.export variant --model M --metrics J --preprocess-summary P --model-card C --out-dir D
    python -m boneage.export ensemble --member NAME DIR ... --metrics J --out-dir D
    python -m boneage.export average --member NAME MODEL METRICS CARD ... --preprocess-summary P --metrics J --out-dir D
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .files import atomic_dir, run_main, setup_logging
from .results.bundle import write_average, write_ensemble, write_variant


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="kind", required=True)
    one = sub.add_parser("variant", help="bundle one trained variant")
    one.add_argument("--model", required=True)
    one.add_argument("--metrics", required=True, help="the variant's evaluate/metrics.json")
    one.add_argument("--preprocess-summary", required=True)
    one.add_argument("--model-card", required=True)
    one.add_argument("--out-dir", required=True)
    ens = sub.add_parser("ensemble", help="bundle the ensemble from its members' bundles")
    ens.add_argument("--member", nargs=2, action="append", required=True, metavar=("NAME", "BUNDLE_DIR"))
    ens.add_argument("--metrics", required=True, help="evaluate/ensemble/metrics.json")
    ens.add_argument("--out-dir", required=True)
    avg = sub.add_parser("average", help="bundle a fold or seed ensemble from its models, equally weighted")
    avg.add_argument("--member", nargs=4, action="append", required=True,
                     metavar=("NAME", "MODEL", "METRICS", "CARD"), help="one per model (fold<k>, seed<k>)")
    avg.add_argument("--preprocess-summary", required=True)
    avg.add_argument("--metrics", required=True, help="evaluate/<variant>_folds|_seeds/metrics.json")
    avg.add_argument("--out-dir", required=True)
    args = parser.parse_args(argv)
    setup_logging()
    # built in a temporary folder that then takes the bundle's place: a reader (predict) sees the old
    # bundle or the new one, and a failed or killed export leaves the old one
    with atomic_dir(args.out_dir) as out:
        if args.kind == "average":
            write_average(out, {m[0]: tuple(map(Path, m[1:])) for m in args.member}, Path(args.preprocess_summary),
                          Path(args.metrics))
        elif args.kind == "variant":
            write_variant(out, Path(args.model), Path(args.metrics), Path(args.preprocess_summary),
                          Path(args.model_card))
        else:
            write_ensemble(out, {n: Path(d) for n, d in args.member}, Path(args.metrics))


if __name__ == "__main__":
    run_main(main)
