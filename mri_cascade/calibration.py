"""Temperature scaling per model, fitted on the validation split, and calibration error of the cascade.

A model's probabilities become softmax(logits / T), with T stored in its config as ``calibration_temperature``; dividing
by a positive T never changes a model's argmax. The disease detector's healthy threshold is re-tuned on the
calibrated probabilities, since it is a probability threshold.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar

ECE_BINS = 15
TEMPERATURE_KEY = "calibration_temperature"
"""config.json key (transformers 5 drops a plain ``temperature`` from model configs as a generation setting)."""


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    scaled = logits / temperature
    scaled = np.exp(scaled - scaled.max(axis=1, keepdims=True))
    return scaled / scaled.sum(axis=1, keepdims=True)


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


def calibrate_models(models_dir: Path, splits, out_dir: Path, validation_fraction: float = 0.15, seed: int = 42) -> dict:
    """Fit every model's temperature on the training script's validation split, re-tune the healthy threshold on
    the calibrated probabilities, store both in the configs, and report test ECE before and after.

    "Before" is T = 1 with the threshold tuned on uncalibrated probabilities, so running this again reports
    the same figures.
    """
    from .cascade import Cascade
    from .data import carve_validation
    from .evaluation import tune_healthy_threshold
    from .labels import TASKS

    _, validation = carve_validation(splits["train"], validation_fraction, seed)
    cascade = Cascade.from_pretrained(models_dir)
    print(f"fitting temperatures on {len(validation)} validation images ...", flush=True)
    logits = {"validation": cascade.stage_logits(validation["image"]), "test": cascade.stage_logits(splits["test"]["image"])}
    truth = {"validation": np.asarray(validation["label_id"]), "test": np.asarray(splits["test"]["label_id"])}

    def task_labels(split: str, task) -> tuple[np.ndarray, np.ndarray]:
        members = np.isin(truth[split], task.members())
        return members, np.array([task.class_index(label) for label in truth[split][members]])

    figures = {}
    for name, task in TASKS.items():
        members, labels = task_labels("validation", task)
        temperature = fit_temperature(logits["validation"][name][members], labels)
        figures[name] = {"temperature": temperature}
        test_members, test_labels = task_labels("test", task)
        for when, t in (("before", 1.0), ("after", temperature)):
            probabilities = softmax(logits["test"][name][test_members], t)
            figures[name][f"test_ece_{when}"] = expected_calibration_error(
                probabilities.max(axis=1), probabilities.argmax(axis=1) == test_labels)
    detector = models_dir / "disease-detector"
    target = json.loads((detector / "validation_results.json").read_text())["healthy_threshold"]["target_disease_recall"]
    curves, end_to_end = {}, {}
    for when in ("before", "after"):
        temperatures = {name: figures[name]["temperature"] if when == "after" else 1.0 for name in TASKS}
        p_healthy = softmax(logits["validation"]["disease-detector"], temperatures["disease-detector"])[:, 0]
        threshold = tune_healthy_threshold(p_healthy, truth["validation"] == "healthy", target)
        cascade.healthy_threshold = threshold["threshold"]
        results = cascade.combine({name: softmax(logits["test"][name], temperatures[name]) for name in TASKS})
        confidence = np.array([result.probabilities[result.label] for result in results])
        correct = np.array([result.label == label for result, label in zip(results, truth["test"])])
        curves[f"{when} scaling"] = (confidence, correct)
        end_to_end[when] = {"ece": expected_calibration_error(confidence, correct), "accuracy": float(correct.mean()),
                            "healthy_threshold": threshold["threshold"]}
    figures["disease-detector"]["healthy_threshold"] = threshold
    for name in TASKS:
        config_path = models_dir / name / "config.json"
        config = json.loads(config_path.read_text())
        config[TEMPERATURE_KEY] = figures[name]["temperature"]
        if name == "disease-detector":
            config["healthy_threshold"] = threshold["threshold"]
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        (models_dir / name / "calibration.json").write_text(json.dumps(figures[name], indent=2))
    out_dir.mkdir(parents=True, exist_ok=True)
    reliability_diagram(curves, out_dir / "reliability_cascade.png")
    report = {"models": figures, "cascade_end_to_end": end_to_end}
    (out_dir / "calibration.json").write_text(json.dumps(report, indent=2))
    return report
