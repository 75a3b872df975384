"""Pixels in: the RSNA folder layout and label file, reading any radiograph into grey levels, the hand
check, the crop (MediaPipe or thresholding) and the rendering of each model input, the QC contact
sheet, and the synthetic demo films. Imports nothing from :mod:`boneage.learning` or
:mod:`boneage.results`."""
