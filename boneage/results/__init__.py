"""What a trained model gives: metrics and bootstrap intervals, test-retest stability, prediction
intervals, tables, figures and pages, Grad-CAM, provenance, and the deployable bundle with the
estimates it makes on new films. May import :mod:`boneage.imaging` and :mod:`boneage.learning`."""
