"""Pediatric bone age assessment from hand radiographs: the stages of the Snakemake pipeline.

The package's top level holds the stages, one module each, in the order the rules run them
(``python -m boneage.<stage> --help``): ``download`` -> ``preprocess`` [-> ``views``] -> ``split``
-> ``plan`` -> ``train`` -> ``evaluate`` [-> ``crossval``, ``seeds``, ``ensemble``] -> ``gradcam``
-> ``report``; ``export`` writes bundles, ``predict`` and ``calibrate`` use them, ``compare`` sets
runs side by side. Stages talk only through files on disk (nnU-Net style) and import no stage.

What the stages share lives in three subpackages, each importing only those before it:
:mod:`boneage.imaging` (pixels in: layout, labels, crop, rendering, demo films),
:mod:`boneage.learning` (store, batches, networks, trainer, inference) and
:mod:`boneage.results` (metrics, intervals, stability, tables, figures, bundles, estimates);
plus two helpers at the top that everything may use, :mod:`boneage.config` and :mod:`boneage.files`.
"""

__version__ = "0.1.0"
