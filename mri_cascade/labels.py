"""The taxonomy: the seven answers, the four cascade tasks and the folder-name mapping.

This module is the only place that knows how dataset folders are spelled and
how the seven answers split into the four models' classes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

LABELS: dict[str, str] = {
    "healthy": "No disease found",
    "alzheimer_very_mild": "Very mild Alzheimer's",
    "alzheimer_mild": "Mild Alzheimer's",
    "alzheimer_moderate": "Moderate Alzheimer's",
    "tumor_glioma": "Glioma",
    "tumor_meningioma": "Meningioma",
    "tumor_pituitary": "Pituitary tumor",
}
LABEL_IDS: tuple[str, ...] = tuple(LABELS)

UNTYPED_TUMOR = "tumor"
"""A training label, never an answer: a tumor whose type the source does not give (a Br35H ``yes`` slice). It
teaches the disease detector and Alzheimer's vs tumor, never tumor type; an answer of any tumor type matches it."""
PARTIAL_LABELS: tuple[str, ...] = (UNTYPED_TUMOR,)

# Source folder / dataset class spellings, normalised by `_normalise`, mapped to label ids.
# Covers the Kaggle folders in ../shared/data and the Hub datasets
# Falah/Alzheimer_MRI and sartajbhuvaji/Brain-Tumor-Classification, and Br35H's yes/no folders (a tumor of
# unknown type / no tumor). What each label teaches follows from the tasks' ``class_of`` below.
_SOURCE_NAMES: dict[str, str] = {
    "yes": UNTYPED_TUMOR,
    "no": "healthy",
    "nondemented": "healthy",
    "notumor": "healthy",
    "notumour": "healthy",
    "healthy": "healthy",
    "verymilddemented": "alzheimer_very_mild",
    "milddemented": "alzheimer_mild",
    "moderatedemented": "alzheimer_moderate",
    "glioma": "tumor_glioma",
    "gliomatumor": "tumor_glioma",
    "meningioma": "tumor_meningioma",
    "meningiomatumor": "tumor_meningioma",
    "pituitary": "tumor_pituitary",
    "pituitarytumor": "tumor_pituitary",
}


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z]", "", name.lower())


def label_id_from_source(name: str) -> str:
    """Map a dataset's class name (``Mild_Demented``, ``notumor``, ``glioma_tumor`` ...) to a label id."""
    key = _normalise(name)
    if key in _SOURCE_NAMES:
        return _SOURCE_NAMES[key]
    if name in LABELS or name in PARTIAL_LABELS:
        return name
    raise ValueError(f"unknown class name {name!r}; expected one of the Alzheimer or brain tumor classes")


@dataclass(frozen=True)
class Task:
    """One model of the cascade: its directory / Hub suffix and how label ids map onto its classes."""

    name: str
    title: str
    classes: tuple[str, ...]
    class_of: dict[str, str]  # label id -> this task's class; ids absent here are not in the task

    def members(self) -> tuple[str, ...]:
        return tuple(self.class_of)

    def class_index(self, label_id: str) -> int:
        """Index, in this task's classes, of the class a label id belongs to."""
        return self.classes.index(self.class_of[label_id])


DISEASE_DETECTOR = Task(
    "disease-detector",
    "Disease detector",
    ("healthy", "disease"),
    {label: ("healthy" if label == "healthy" else "disease") for label in LABEL_IDS + PARTIAL_LABELS},
)
ALZHEIMER_VS_TUMOR = Task(
    "alzheimer-vs-tumor",
    "Alzheimer's vs tumor",
    ("alzheimer", "tumor"),
    {label: label.split("_")[0] for label in LABEL_IDS + PARTIAL_LABELS if label != "healthy"},
)
ALZHEIMER_SEVERITY = Task(
    "alzheimer-severity",
    "Alzheimer's severity",
    ("very_mild", "mild", "moderate"),
    {label: label.removeprefix("alzheimer_") for label in LABEL_IDS if label.startswith("alzheimer_")},
)
TUMOR_TYPE = Task(
    "tumor-type",
    "Tumor type",
    ("glioma", "meningioma", "pituitary"),
    {label: label.removeprefix("tumor_") for label in LABEL_IDS if label.startswith("tumor_")},
)
TASKS: dict[str, Task] = {t.name: t for t in (DISEASE_DETECTOR, ALZHEIMER_VS_TUMOR, ALZHEIMER_SEVERITY, TUMOR_TYPE)}
FAMILIES: tuple[str, ...] = ALZHEIMER_VS_TUMOR.classes
"""Scan families, as stage 2 names them (healthy scans included); each has its own healthy threshold."""


def typed_truth(answers, truth) -> np.ndarray:
    """The true label ids with each ``UNTYPED_TUMOR`` replaced by the answer when that names a tumor type: what an
    answer is scored against. A tumor of unknown type is answered right by any tumor type."""
    answers, truth = np.asarray(answers, dtype=object), np.asarray(truth, dtype=object).copy()
    typed = (truth == UNTYPED_TUMOR) & np.array([str(a).startswith("tumor_") for a in answers], dtype=bool)
    truth[typed] = answers[typed]
    return truth


def answers_match(answers, truth) -> np.ndarray:
    """Elementwise: is each answer (``None``: refused) right for its true label id (``typed_truth``)?"""
    return np.asarray(answers, dtype=object) == typed_truth(answers, truth)
