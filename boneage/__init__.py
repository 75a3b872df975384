"""Pediatric bone age assessment from hand radiographs: the stages of the Snakemake pipeline.

Each module is one stage and reads and writes files only (nnU-Net style), so that any stage can be
re-run alone: ``download`` -> ``preprocess`` -> ``split`` -> ``train`` -> ``evaluate`` ->
``ensemble`` -> ``report``.  Every stage module has a command-line entry point
(``python -m boneage.<stage> --help``) which the Snakemake rules call.
"""

__version__ = "0.1.0"
