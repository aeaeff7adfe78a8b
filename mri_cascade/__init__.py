"""MRI Cascade: Alzheimer's disease and brain tumor classification of 2-D brain MRI slices."""

from .cascade import Cascade
from .images import ImageLoadError, load_image, load_series
from .labels import LABEL_IDS, LABELS, TASKS
from .loading import ModelLoadError
from .results import CascadeResult, SeriesResult, StageResult

__all__ = [
    "Cascade", "CascadeResult", "SeriesResult", "StageResult", "ModelLoadError",
    "ImageLoadError", "load_image", "load_series", "LABEL_IDS", "LABELS", "TASKS",
]
