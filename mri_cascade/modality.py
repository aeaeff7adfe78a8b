"""Telling a head CT from an MRI slice by what sets CT apart: a saturated bone ring around a flat grey brain.

On CT shown in a brain window, the skull is the brightest thing in the picture and the brain inside it is flat
grey; on MRI the skull is dark (cortical bone gives no signal) and what is brightest lies inside the head (fat,
fluid, enhancing tissue). ``bone_rim`` measures both: the share of saturated pixels in the outer rim of the head,
and inside the brain. The modality audit (``non_mri.csv``) lists which CT slices of the collections it finds;
the refusal check uses it to say why it refuses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

SIDE = 128  # the picture is measured at 128x128
HEAD_LEVEL = 25  # grey level above which a pixel is part of the head
BONE_LEVEL = 235  # a saturated (bone-window) pixel
RIM_DEPTH, BRAIN_DEPTH = 6, 14  # erosions (pixels at SIDE) that leave the head without its rim / the brain
RIM_SHARE, BRAIN_SHARE = 0.15, 0.03  # CT: more saturated rim than this, less saturated brain than that


@dataclass(frozen=True)
class BoneRim:
    rim_saturation: float  # share of the head's outer rim that is saturated
    brain_saturation: float  # share of the inner brain that is saturated

    @property
    def looks_like_ct(self) -> bool:
        return self.rim_saturation > RIM_SHARE and self.brain_saturation < BRAIN_SHARE


def erode(mask: np.ndarray, iterations: int) -> np.ndarray:
    """``mask`` eroded ``iterations`` times by the 3x3 cross, outside the picture counting as background: what
    ``scipy.ndimage.binary_erosion(mask, iterations=...)`` gives, without the half second scipy takes to import
    at every start."""
    for _ in range(iterations):
        padded = np.pad(mask, 1, constant_values=False)
        mask = (padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    return mask


def bone_rim(image: Image.Image) -> BoneRim:
    grey = np.asarray(image.convert("L").resize((SIDE, SIDE), Image.BILINEAR), dtype=np.float32)
    head = grey > HEAD_LEVEL
    rim = head & ~erode(head, RIM_DEPTH)
    brain = erode(head, BRAIN_DEPTH)
    if not rim.any() or not brain.any():
        return BoneRim(0.0, 0.0)
    saturated = grey >= BONE_LEVEL
    return BoneRim(float(saturated[rim].mean()), float(saturated[brain].mean()))
