"""Stage 3b, plan: a variant's resolved training settings as ``results/models/<variant>/spec.json``.

The config's top-level ``epochs``, ``train`` and the model's own keys, merged (``config.variant_spec``)
and validated as a :class:`~boneage.learning.spec.TrainSpec`, with every setting spelled out. The trainer
reads this file, so the plan of every trained model is an artifact beside it, and editing one
model's settings re-runs that model only.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

from .files import run_main, setup_logging, write_json
from .learning.spec import TrainSpec

log = logging.getLogger("boneage.plan")


def run(variant: str, settings: dict, out: Path) -> TrainSpec:
    try:
        spec = TrainSpec.from_dict(settings)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"config models.{variant}: {exc}") from exc
    write_json(out, asdict(spec))
    log.info("plan of %s: %s", variant, out)
    return spec


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", required=True, help="variant name (config key under models)")
    parser.add_argument("--settings", required=True, help="the variant's merged settings as JSON")
    parser.add_argument("--out", required=True, help="spec.json to write")
    args = parser.parse_args(argv)
    setup_logging()
    try:
        run(args.variant, json.loads(args.settings), Path(args.out))
    except ValueError as exc:
        log.error("%s", exc)
        sys.exit(1)


if __name__ == "__main__":
    run_main(main)
