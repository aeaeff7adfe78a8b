"""Temperature scaling as applied: a model's probabilities are softmax(logits / T), with T stored in its config as
``calibration_temperature``; dividing by a positive T never changes a model's argmax. Fitting T is research code
(``research.calibration_fit``, ``research.fitting.calibrate_models``).
"""

from __future__ import annotations

import numpy as np

TEMPERATURE_KEY = "calibration_temperature"
"""config.json key (transformers 5 drops a plain ``temperature`` from model configs as a generation setting)."""


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = logits / temperature
    scaled = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    return scaled / scaled.sum(axis=1, keepdims=True)
