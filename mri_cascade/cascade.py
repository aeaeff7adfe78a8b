"""The four-model cascade: healthy or disease, Alzheimer's or tumor, then severity or type."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoImageProcessor, AutoModelForImageClassification

from .images import ImageSource, load_image
from .labels import ALZHEIMER_SEVERITY, ALZHEIMER_VS_TUMOR, DISEASE_DETECTOR, LABELS, TASKS, TUMOR_TYPE

DEFAULT_MODELS = Path(__file__).resolve().parent.parent / "models"
MODELS_ENV = "MRI_CASCADE_MODELS"
"""Environment variable naming the models: a local directory or a Hub prefix (default: the shipped models/)."""


class ModelLoadError(RuntimeError):
    """A cascade model could not be loaded; the message names the model and where it was looked for."""
DEFAULT_HEALTHY_THRESHOLD = 0.5


@dataclass
class StageResult:
    name: str  # the task, e.g. "disease-detector"
    title: str
    probabilities: dict[str, float]  # the model's classes -> probability
    decision: str


@dataclass
class CascadeResult:
    label: str  # one of the seven label ids
    display_name: str
    probabilities: dict[str, float]  # all seven label ids -> joint probability, summing to 1
    stages: list[StageResult]  # the stages on the path taken, in order

    def to_dict(self) -> dict:
        return asdict(self)


def model_location(source: str | os.PathLike | None, task: str) -> str:
    """Where a task's model lives: ``<dir>/<task>`` for a local directory, else the Hub repo ``<prefix>-<task>``."""
    if source is None:
        source = os.environ.get(MODELS_ENV) or DEFAULT_MODELS
    if os.path.isdir(source):
        return str(Path(source) / task)
    return f"{source}-{task}"


class Cascade:
    def __init__(self, models: dict[str, tuple[torch.nn.Module, object]]):
        missing = set(TASKS) - set(models)
        if missing:
            raise ValueError(f"cascade needs all four models; missing {sorted(missing)}")
        self.models = models
        for model, _ in models.values():
            model.eval()
        detector_config = models[DISEASE_DETECTOR.name][0].config
        self.healthy_threshold = float(getattr(detector_config, "healthy_threshold", DEFAULT_HEALTHY_THRESHOLD))

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike | None = None) -> Cascade:
        """Load the four models from ``source``: a local directory holding one folder per task, or a Hub
        prefix such as ``org/mri`` (``org/mri-disease-detector``, ...). None means ``$MRI_CASCADE_MODELS``,
        else the shipped ``models/``. Weights load from safetensors only; no remote code runs."""
        models = {}
        for task in TASKS:
            location = model_location(source, task)
            try:
                model = AutoModelForImageClassification.from_pretrained(
                    location, use_safetensors=True, trust_remote_code=False
                )
                processor = AutoImageProcessor.from_pretrained(location, trust_remote_code=False)
            except (OSError, ValueError, KeyError, RuntimeError) as error:
                raise ModelLoadError(f"could not load the {task} model from {location}: {error}") from error
            expected = set(TASKS[task].classes)
            found = set(model.config.id2label.values())
            if found != expected:
                raise ModelLoadError(
                    f"the {task} model at {location} has classes {sorted(found)}, expected {sorted(expected)}"
                )
            models[task] = (model, processor)
        return cls(models)

    @torch.inference_mode()
    def stage_probabilities(self, images: Sequence[ImageSource], batch_size: int = 32) -> dict[str, np.ndarray]:
        """Every model's class probabilities for every image, columns in each task's class order."""
        loaded = [load_image(image) for image in images]
        outputs: dict[str, list[np.ndarray]] = {task: [] for task in TASKS}
        for start in range(0, len(loaded), batch_size):
            chunk = loaded[start : start + batch_size]
            for task, (model, processor) in self.models.items():
                pixels = processor(chunk, return_tensors="pt")["pixel_values"]
                probabilities = model(pixel_values=pixels).logits.softmax(dim=-1).numpy()
                order = [model.config.label2id[c] for c in TASKS[task].classes]
                outputs[task].append(probabilities[:, order])
        return {task: np.concatenate(parts) for task, parts in outputs.items()}

    def combine(self, stage_probabilities: dict[str, np.ndarray]) -> list[CascadeResult]:
        """Route each image down the cascade and form the joint distribution over the seven ids."""
        return [
            self._combine_one({task: probabilities[i] for task, probabilities in stage_probabilities.items()})
            for i in range(len(stage_probabilities[DISEASE_DETECTOR.name]))
        ]

    def _combine_one(self, p: dict[str, np.ndarray]) -> CascadeResult:
        healthy, disease = p[DISEASE_DETECTOR.name]
        alzheimer, tumor = p[ALZHEIMER_VS_TUMOR.name]
        joint = {"healthy": float(healthy)}
        for task, branch in ((ALZHEIMER_SEVERITY, alzheimer), (TUMOR_TYPE, tumor)):
            for label, cls in task.class_of.items():
                joint[label] = float(disease * branch * p[task.name][task.classes.index(cls)])
        total = sum(joint.values())
        joint = {label: joint[label] / total for label in LABELS}

        def stage(task, decision_index: int) -> StageResult:
            probabilities = {c: float(v) for c, v in zip(task.classes, p[task.name])}
            return StageResult(task.name, task.title, probabilities, task.classes[decision_index])

        if healthy > self.healthy_threshold:
            stages = [stage(DISEASE_DETECTOR, 0)]
            label = "healthy"
        else:
            branch_task = ALZHEIMER_SEVERITY if alzheimer >= tumor else TUMOR_TYPE
            choice = int(np.argmax(p[branch_task.name]))
            stages = [stage(DISEASE_DETECTOR, 1), stage(ALZHEIMER_VS_TUMOR, 0 if branch_task is ALZHEIMER_SEVERITY else 1),
                      stage(branch_task, choice)]
            label = next(k for k, v in branch_task.class_of.items() if v == branch_task.classes[choice])
        return CascadeResult(label, LABELS[label], joint, stages)

    def predict_batch(self, images: Sequence[ImageSource], batch_size: int = 32) -> list[CascadeResult]:
        return self.combine(self.stage_probabilities(images, batch_size))

    def predict(self, image: ImageSource) -> CascadeResult:
        return self.predict_batch([image])[0]
