"""Hand crop: MediaPipe HandLandmarker first, a classical crop when it finds no hand.

MediaPipe is trained on photographs, so each radiograph is shown to it in up to four renderings
(as is, contrast-equalised, inverted, both) and the first hand that thresholding agrees with wins
(MediaPipe can take the thumb alone for a hand on an X-ray). The landmark box is widened towards the
forearm, since the distal radius and ulna (the most informative growth plates) lie beyond
MediaPipe's wrist point, and to hold all of the thresholded hand, since its tips are often short.

The classical fallback works on a copy with a long side of 512 px: Otsu after CLAHE, film edges and
cassette lines dropped, side markers and labels left out, the large components kept. Where that
takes a whole exposed field (a collimated rectangle, a dim hand on a grey field), the hand is
looked for inside it as what stands above the field's own background. When nothing is found, the
whole image is kept. Every image's winning method, box and landmark count are recorded.

Side markers (lead letters in a plastic holder) and burnt-in text are painted out with the grey
around them, but only where they step sharply down to their surroundings and lie clear of the
hand: a saturated wrist looks like a lead letter to a threshold, and painting over bone is worse
than leaving a marker in.

Modules: :mod:`.cropper` (the :class:`HandCropper`), :mod:`.landmarks` (MediaPipe's box), :mod:`.threshold`
(the classical crop's :class:`Analysis`), :mod:`.markers` (letters and labels), :mod:`.handmodel` (the
model file), :mod:`.boxes` (geometry, and the part of the hand a model sees: the whole hand, the wrist or the fingers).
"""

from .boxes import REGIONS, region_box
from .cropper import CROP_METHODS, RENDERINGS, Crop, HandCropper
from .handmodel import HandModelError, check_hand_model, packaged_hand_model, resolve_hand_model
from .threshold import Analysis, classical_box, marker_boxes, remove_markers

__all__ = ["CROP_METHODS", "REGIONS", "RENDERINGS", "Analysis", "Crop", "HandCropper", "HandModelError", "check_hand_model",
           "classical_box", "marker_boxes", "packaged_hand_model", "region_box", "remove_markers",
           "resolve_hand_model"]
