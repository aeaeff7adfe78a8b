"""The cascade's decision rules, as pure functions on probabilities: each rule is defined here and only here.

- healthy: P(healthy) strictly above the threshold of the scan's family (``calls_healthy``);
- family: what stage 2 says, Alzheimer-type when P(alzheimer) >= P(tumor) (``scan_families``);
- the answer and the joint distribution over the seven ids (``decide``);
- a patient's series: each model's probabilities averaged over the slices (``pool_series``);
- refusal: unfamiliarity above 1, or looking like a head CT (``refuses``);
- a series with too few answered slices is refused (``series_too_sparse``).
"""

from __future__ import annotations

import numpy as np

from .labels import ALZHEIMER_SEVERITY, ALZHEIMER_VS_TUMOR, DISEASE_DETECTOR, FAMILIES, LABELS, TUMOR_TYPE
from .results import DEFAULT_OPERATING_POINT, CascadeResult, StageResult

OPERATING_POINTS = ("balanced", "screening")
"""The named healthy-threshold settings in the disease detector's config (``operating_points``): ``balanced``, the
best validation end-to-end accuracy, and ``screening``, >= 95 % validation disease recall in each scan family."""
SCREENING_DISEASE_RECALL = 0.95
"""The disease recall in each family that the screening point is fitted to reach on validation data."""
REFUSAL_LIMIT = 1.0
"""Unfamiliarity above which an input is refused (the refusal check scales each of its tests to this limit)."""
MIN_ANSWERED_SHARE = 0.5
"""A series is answered only when at least this share of its slices are (look like brain MRI): when most are refused,
the few that pass are more likely odd slices of something else than a patient's brain."""
__all__ = ["DEFAULT_OPERATING_POINT", "OPERATING_POINTS", "calls_healthy", "check_operating_point", "decide",
           "healthy_above", "pool_series", "refuses", "scan_families", "series_too_sparse"]


def check_operating_point(operating_point: str) -> str:
    if operating_point not in OPERATING_POINTS:
        raise ValueError(f"unknown operating point {operating_point!r}; choose one of {', '.join(OPERATING_POINTS)}")
    return operating_point


def scan_families(p_alzheimer_vs_tumor: np.ndarray) -> np.ndarray:
    """Each scan's family as stage 2 names it, healthy or not: "alzheimer" when P(alzheimer) >= P(tumor)."""
    p = np.asarray(p_alzheimer_vs_tumor).reshape(-1, 2)
    return np.where(p[:, 0] >= p[:, 1], FAMILIES[0], FAMILIES[1])


def healthy_above(p_healthy, threshold) -> np.ndarray:
    """The healthy rule itself: P(healthy) strictly above the threshold (a tie counts as disease: missing a
    disease costs more than a false alarm). Broadcasts, e.g. over candidate thresholds when fitting them."""
    return np.asarray(p_healthy, dtype=float) > np.asarray(threshold, dtype=float)


def calls_healthy(p_healthy: np.ndarray, families: np.ndarray, thresholds: dict[str, float]) -> np.ndarray:
    """The cascade's healthy decision: ``healthy_above`` the threshold of each scan's family."""
    limits = np.array([thresholds[family] for family in np.atleast_1d(families)], dtype=float)
    return healthy_above(np.atleast_1d(np.asarray(p_healthy, dtype=float)), limits)


def pool_series(stage_probabilities: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each model's class probabilities pooled over a series' slices: their plain mean (a linear opinion pool).
    Every slice weighs 1/N, so one odd slice can move any probability by at most 1/N and cannot veto what the
    others agree on (a geometric mean lets one near-zero slice do exactly that). A lesion seen on few slices is
    diluted rather than lost: ``Cascade.predict_series`` names the slices that disagree."""
    return {task: np.asarray(probabilities, dtype=float).mean(axis=0, keepdims=True)
            for task, probabilities in stage_probabilities.items()}


def refuses(unfamiliarity: np.ndarray, looks_like_ct: np.ndarray) -> np.ndarray:
    """The refusal rule: unfamiliarity above ``REFUSAL_LIMIT``, or looking like a head CT to the refusal check's CT
    test (``FamiliarityCheck.looks_like_ct``), however familiar otherwise."""
    return (np.asarray(unfamiliarity, dtype=float) > REFUSAL_LIMIT) | np.asarray(looks_like_ct, dtype=bool)


def series_too_sparse(answered: int, slices: int) -> bool:
    """The series rule: refused when fewer than ``MIN_ANSWERED_SHARE`` of its ``slices`` are ``answered``."""
    return answered < MIN_ANSWERED_SHARE * slices


def decide(p: dict[str, np.ndarray], healthy: bool, operating_point: str, threshold: float | None = None) -> CascadeResult:
    """One image's answer from its four models' class probabilities ``p`` and the healthy rule's verdict (reached
    with ``threshold``): the joint distribution over the seven ids (the product along each path), and the path taken
    (healthy, or stage 2's family and then that branch's argmax)."""
    p_healthy, disease = p[DISEASE_DETECTOR.name]
    alzheimer, tumor = p[ALZHEIMER_VS_TUMOR.name]
    joint = {"healthy": float(p_healthy)}
    for task, branch in ((ALZHEIMER_SEVERITY, alzheimer), (TUMOR_TYPE, tumor)):
        for label, cls in task.class_of.items():
            joint[label] = float(disease * branch * p[task.name][task.classes.index(cls)])
    total = sum(joint.values())
    joint = {label: joint[label] / total for label in LABELS}

    def stage(task, decision_index: int) -> StageResult:
        probabilities = {c: float(v) for c, v in zip(task.classes, p[task.name])}
        return StageResult(task.name, task.title, probabilities, task.classes[decision_index])

    if healthy:
        stages = [stage(DISEASE_DETECTOR, 0)]
        label = "healthy"
    else:
        branch_task = ALZHEIMER_SEVERITY if alzheimer >= tumor else TUMOR_TYPE
        choice = int(np.argmax(p[branch_task.name]))
        stages = [stage(DISEASE_DETECTOR, 1), stage(ALZHEIMER_VS_TUMOR, 0 if branch_task is ALZHEIMER_SEVERITY else 1),
                  stage(branch_task, choice)]
        label = next(k for k, v in branch_task.class_of.items() if v == branch_task.classes[choice])
    return CascadeResult(label, LABELS[label], joint, stages, operating_point=operating_point, healthy_threshold=threshold)
