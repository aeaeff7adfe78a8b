"""MRI Cascade: Alzheimer's disease and brain tumor classification of 2-D brain MRI slices."""

from .cascade import Cascade, CascadeResult, ModelLoadError, StageResult
from .images import ImageLoadError, load_image
from .labels import LABEL_IDS, LABELS, TASKS

__all__ = [
    "Cascade", "CascadeResult", "ModelLoadError", "StageResult", "ImageLoadError", "load_image", "LABEL_IDS", "LABELS", "TASKS",
]
