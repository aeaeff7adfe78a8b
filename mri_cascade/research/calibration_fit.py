"""Fitting temperatures on held-out logits, and measuring calibration: ECE and reliability diagrams."""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar

from ..calibration import softmax

ECE_BINS = 15


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 minimising the negative log-likelihood of ``labels`` under softmax(logits / T)."""

    def nll(log_t: float) -> float:
        probabilities = softmax(logits, float(np.exp(log_t)))
        return float(-np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-12, 1)).mean())

    return float(np.exp(minimize_scalar(nll, bounds=(-3, 4), method="bounded").x))


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over equal-width confidence bins of |accuracy - mean confidence|, weighted by the bin's share."""
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)


def reliability_diagram(curves: dict[str, tuple[np.ndarray, np.ndarray]], path, bins: int = ECE_BINS) -> None:
    """One line per named (confidence, correct) pair: accuracy against confidence per bin, with the ECE."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    edges = np.linspace(0, 1, bins + 1)
    figure, axes = plt.subplots(figsize=(5.5, 5.5))
    axes.plot([0, 1], [0, 1], "k:", label="perfect calibration")
    for name, (confidence, correct) in curves.items():
        index = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
        centres = [confidence[index == b].mean() for b in range(bins) if (index == b).any()]
        accuracy = [correct[index == b].mean() for b in range(bins) if (index == b).any()]
        ece = expected_calibration_error(confidence, correct, bins)
        axes.plot(centres, accuracy, "o-", label=f"{name} (ECE {ece:.3f})")
    axes.set_xlabel("confidence of the cascade's answer")
    axes.set_ylabel("accuracy")
    axes.set_title(f"Reliability, official test splits ({bins} bins)")
    axes.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
