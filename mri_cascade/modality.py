"""What sets a head CT apart from an MRI slice in its pixels, as features for the CT test of the refusal check.

On CT shown in a brain window, the skull is the brightest thing in the picture, a ring at the head's edge, and the
brain inside it is flat grey; on MRI the skull is a dark band (cortical bone gives no signal) between a bright scalp
and the brain. A fresh bleed on CT is as bright as bone, but it lies inside the ring, not at the edge. So the
features (``pixel_features``) are where the bright pixels lie: the intensity profile from the head's edge inwards,
the saturated shares of the outer rim and of the inner brain, and the head's grey-level histogram. (The modality
audit, ``non_mri.csv``, found most of the collections' CT slices with a rule on the two saturated shares.)
"""

from __future__ import annotations

import numpy as np
from PIL import Image

SIDE = 128  # the picture is measured at 128x128
HEAD_LEVEL = 25  # grey level above which a pixel is part of the head
BONE_LEVEL = 235  # a saturated (bone-window) pixel
RIM_DEPTH, BRAIN_DEPTH = 6, 14  # erosions (pixels at SIDE) that leave the head without its rim / the brain


def erode(mask: np.ndarray, iterations: int) -> np.ndarray:
    """``mask`` eroded ``iterations`` times by the 3x3 cross, outside the picture counting as background: what
    ``scipy.ndimage.binary_erosion(mask, iterations=...)`` gives, without the half second scipy takes to import
    at every start."""
    for _ in range(iterations):
        padded = np.pad(mask, 1, constant_values=False)
        mask = (padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    return mask


EDGE_DEPTHS = 12  # the profile from the head's edge inwards: the mean grey of each of the first 12 one-pixel rings
HISTOGRAM_BINS = 16
PIXEL_FEATURES = 2 + EDGE_DEPTHS + HISTOGRAM_BINS


def pixel_features(image: Image.Image) -> np.ndarray:
    """(PIXEL_FEATURES,) float32 in [0, 1], at 128x128: the saturated shares of the head's outer rim (its first
    ``RIM_DEPTH`` rings) and of the brain (deeper than ``BRAIN_DEPTH``), the mean grey of each ring from the head's
    edge inwards (bone on CT; scalp, then dark skull on MRI), and the head's grey-level histogram."""
    grey = np.asarray(image.convert("L").resize((SIDE, SIDE), Image.BILINEAR), dtype=np.float32)
    head = grey > HEAD_LEVEL
    saturated = grey >= BONE_LEVEL
    profile = np.zeros(EDGE_DEPTHS, dtype=np.float32)
    inside, rim = head, np.zeros_like(head)
    for depth in range(max(EDGE_DEPTHS, BRAIN_DEPTH)):
        deeper = erode(inside, 1)
        ring = inside & ~deeper
        if depth < EDGE_DEPTHS:
            profile[depth] = grey[ring].mean() / 255 if ring.any() else 0.0
        if depth < RIM_DEPTH:
            rim |= ring
        inside = deeper
    rim_saturation = float(saturated[rim].mean()) if rim.any() and inside.any() else 0.0
    brain_saturation = float(saturated[inside].mean()) if rim.any() and inside.any() else 0.0
    counts = np.histogram(grey[head], bins=HISTOGRAM_BINS, range=(0, 256))[0] if head.any() else np.zeros(HISTOGRAM_BINS)
    histogram = counts / max(counts.sum(), 1)
    return np.concatenate([[rim_saturation, brain_saturation], profile, histogram]).astype(np.float32)
