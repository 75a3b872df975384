"""Stage 6, export: trained variants and the ensemble as model bundles (``results/bundles/``).

A bundle is the one folder that predicting needs (format: :mod:`boneage.bundle`).

    python -m boneage.export variant --model M --metrics J --preprocess-summary P --model-card C --out-dir D
    python -m boneage.export ensemble --member NAME DIR ... --metrics J --out-dir D
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .bundle import write_ensemble, write_folds, write_variant
from .files import setup_logging


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
    folds = sub.add_parser("folds", help="bundle a variant's fold ensemble from its fold models")
    folds.add_argument("--fold", nargs=3, action="append", required=True, metavar=("MODEL", "METRICS", "CARD"),
                       help="one per fold, in fold order")
    folds.add_argument("--preprocess-summary", required=True)
    folds.add_argument("--metrics", required=True, help="evaluate/<variant>_folds/metrics.json")
    folds.add_argument("--out-dir", required=True)
    args = parser.parse_args(argv)
    setup_logging()
    if args.kind == "folds":
        write_folds(Path(args.out_dir), [tuple(map(Path, f)) for f in args.fold], Path(args.preprocess_summary),
                    Path(args.metrics))
    elif args.kind == "variant":
        write_variant(Path(args.out_dir), Path(args.model), Path(args.metrics), Path(args.preprocess_summary),
                      Path(args.model_card))
    else:
        write_ensemble(Path(args.out_dir), {n: Path(d) for n, d in args.member}, Path(args.metrics))


if __name__ == "__main__":
    main()
