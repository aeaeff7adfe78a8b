"""The benchmark: what a new patient gets, on scans that no model deciding their answer trained on.

Its scans are out of fold. The training data falls into fixed grouped folds (``data.fold_assignment``), drawn by
subject on the Alzheimer collection (``subjects.csv`` names them) and by near-duplicate cluster elsewhere, so no
subject or cluster has scans on both sides. The shipped models held out one fold (``run_train.py
--validation_fold``), or trained on every fold (``--validation none``, a refit); models of the same recipe that held
out a fold (``train/ship.sh`` with ``FOLD=K``, given as ``--fold-models``) answer that fold's scans, each where
every model deciding its answer (``evaluation.tasks_deciding``) is out of fold. All logits go through the shipped
temperatures. The published ``test/`` splits are not used: their Alzheimer slices belong to training subjects.

The healthy thresholds that ``calibrate`` fits come from the same folds, so taking them as they are would flatter
the end-to-end figures. They are cross-fitted instead: the clusters fall into two halves, each half is answered
with the thresholds fitted on the other (``fitting.fit_operating_points``, the same rule as shipped).

Three levels, each figure with a 95 % interval from a bootstrap over clusters (``scipy.stats.bootstrap``):
- slice level: every scan on its own;
- subject level: an Alzheimer subject's held-out slices pooled as one series (``decisions.pool_series``) under
  cross-fitted series thresholds (``fitting.fit_series_operating_points``): the answer the Space gives to a
  subject's upload;
- per source: the Alzheimer collection, the tumor collection's main (512 px figshare) and other sources, Br35H.
It also measures framing through the shipped models, on their held-out fold (a refit's: the lowest fold, which it
trained on, as the report says): real slices with a black border of a quarter of their side on each side, and
mirrored, against the answers to the slices as given.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datasets import Dataset
from PIL import Image, ImageOps
from scipy.stats import bootstrap
from sklearn.metrics import roc_auc_score
from tqdm import tqdm

from ..cascade import Cascade
from ..decisions import OPERATING_POINTS, calls_healthy, healthy_above, scan_families
from ..labels import ALZHEIMER_SEVERITY, ALZHEIMER_VS_TUMOR, DISEASE_DETECTOR, FAMILIES, TASKS, TUMOR_TYPE, answers_match
from ..loading import model_location, resolve_file
from .audit import fingerprint_dataset, near_duplicate_groups
from .data import SPLIT_SEED, VALIDATION_FRACTION, fold_assignment, report_path, true_families
from .evaluation import tasks_deciding
from .fitting import (
    NEVER_HEALTHY,
    TRAINING_RECORD,
    fit_operating_points,
    fit_pooled_alzheimer_points,
    fit_series_operating_points,
    fold_models_by_fold,
    held_out_fold,
    pooled_subjects,
    training_record,
)
from .fold_logits import is_refit

BOOTSTRAP_RESAMPLES = 1000
BORDER_SHARE = 0.25  # the framing check's black border, as a share of the slice's side, on each side
FRAMING_SCANS_PER_CLASS = 8
HALVES = ("first half", "second half")  # the cross-fitting halves of the clusters, by the half answered


def held_out_fold_of(models: str, sources: list[str]) -> int | None:
    """The one validation fold that all four models held out of ``sources``, None when all four trained on every
    scan of them (refits, out of fold only through their fold models); an error when they did neither alike, or
    were trained on other collections (whose folds are drawn over other scans)."""
    folds = {task: held_out_fold(model_location(models, task)) for task in TASKS}
    refits = [is_refit(training_record(model_location(models, task)) or {}) for task in TASKS]
    if not all(refits) and (len(set(folds.values())) != 1 or None in folds.values()):
        raise ValueError(f"the four models must hold out one and the same validation fold, or all train on every "
                         f"scan, to be benchmarked; their training records say {folds}")
    for task in TASKS:
        check_trained_on(model_location(models, task), sources)
    return None if all(refits) else next(iter(folds.values()))


def check_trained_on(location: str, sources: list[str]) -> None:
    """An error unless the model at ``location`` trained on the collections of ``sources``: its held-out fold is
    otherwise drawn over other scans, and nothing tells which of these it never saw."""
    wanted = sorted(Path(source).name for source in sources)
    record = resolve_file(location, TRAINING_RECORD)
    trained_on = sorted(Path(source).name for source in json.loads(Path(record).read_text())["data"]) if record else None
    if trained_on != wanted:
        raise ValueError(f"the model at {location} was trained on {trained_on}, not on {wanted}: its held-out fold "
                         "is drawn over other scans, so the benchmark cannot tell which of these it never saw")


def source_parts(dataset, sizes: list[tuple[int, int]]) -> np.ndarray:
    """Each scan's part for the per-source figures: its collection, with the tumor collection split into its main
    source (its most common image size, the figshare T1 contrast slices) and the rest."""
    sources = np.asarray(dataset["source"])
    sizes = np.array([f"{w}x{h}" for w, h in sizes])
    parts = sources.astype(object).copy()
    for source in ("brain_tumor",):
        members = sources == source
        if members.any():
            values, counts = np.unique(sizes[members], return_counts=True)
            main = members & (sizes == values[counts.argmax()])
            parts[main], parts[members & ~main] = f"{source} (main source)", f"{source} (other sources)"
    return parts.astype(str)


def with_interval(statistic: Callable[[np.ndarray], float], members: np.ndarray, clusters: np.ndarray,
                  seed: int = 0) -> dict:
    """``statistic(indices)`` over the scans ``members``, and its 95 % percentile interval from resampling their
    clusters with replacement. None when there is nothing to measure."""
    indices = np.flatnonzero(members)
    if not len(indices):
        return {"value": None, "low": None, "high": None, "clusters": 0, "images": 0}
    value = statistic(indices)
    cluster_ids = np.unique(clusters[indices])
    by_cluster = {c: indices[clusters[indices] == c] for c in cluster_ids}
    result = {"value": value, "low": None, "high": None, "clusters": len(cluster_ids), "images": len(indices)}
    if value is None or len(cluster_ids) < 2:
        return result

    def resampled(drawn: np.ndarray) -> float:
        picked = np.concatenate([by_cluster[cluster_ids[int(k)]] for k in drawn])
        value = statistic(picked)
        return np.nan if value is None else value

    interval = bootstrap((np.arange(len(cluster_ids)),), resampled, n_resamples=BOOTSTRAP_RESAMPLES,
                         method="percentile", vectorized=False, random_state=seed).confidence_interval
    if np.isfinite(interval.low) and np.isfinite(interval.high):  # else too few resamples held both classes
        result.update(low=float(interval.low), high=float(interval.high))
    return result


def accuracy_of(right: np.ndarray) -> Callable[[np.ndarray], float | None]:
    return lambda i: float(right[i].mean()) if len(i) else None


def auc_of(positive: np.ndarray, score: np.ndarray) -> Callable[[np.ndarray], float | None]:
    def auc(i: np.ndarray) -> float | None:
        return float(roc_auc_score(positive[i], score[i])) if len(set(positive[i].tolist())) == 2 else None
    return auc


def cluster_halves(clusters: np.ndarray, seed: int = SPLIT_SEED) -> np.ndarray:
    """True for the scans of a random half of the clusters (a subject's scans stay together)."""
    cluster_ids = np.unique(clusters)
    return np.isin(clusters, np.random.default_rng(seed).permutation(cluster_ids)[: len(cluster_ids) // 2])


def answered_with(cascade: Cascade, probabilities: dict[str, np.ndarray], limits_by_half: dict[str, dict[str, float]],
                  in_first_half: np.ndarray) -> np.ndarray:
    """Each scan's (or pooled subject's) answer: healthy where its P(healthy) passes the healthy thresholds of its
    half (``limits_by_half``: family -> threshold, by half), else the disease path's answer."""
    families = scan_families(probabilities[ALZHEIMER_VS_TUMOR.name])
    p_healthy = probabilities[DISEASE_DETECTOR.name][:, 0]
    answers = np.array([r.label for r in cascade.combine(probabilities, thresholds=NEVER_HEALTHY)], dtype=object)
    for half, answered in zip(HALVES, (in_first_half, ~in_first_half)):
        healthy = calls_healthy(p_healthy[answered], families[answered], limits_by_half[half])
        answers[np.flatnonzero(answered)[healthy]] = "healthy"
    return answers


def cross_fitted_answers(cascade: Cascade, probabilities: dict[str, np.ndarray], truth: np.ndarray,
                         first_half: np.ndarray) -> tuple[dict[str, np.ndarray], dict]:
    """Per operating point, every scan's answer under the healthy thresholds fitted on the other half of the
    clusters; and those thresholds, by the half they answer ("first half": fitted on the second)."""
    thresholds = {half: fit_operating_points(cascade, {t: p[fitted_on] for t, p in probabilities.items()},
                                             truth[fitted_on])["operating_points"]
                  for half, fitted_on in zip(HALVES, (~first_half, first_half))}
    answers = {point: answered_with(cascade, probabilities, {half: thresholds[half][point] for half in HALVES},
                                    first_half) for point in OPERATING_POINTS}
    return answers, thresholds


def level_figures(answers: np.ndarray, truth: np.ndarray, p_healthy: np.ndarray, clusters: np.ndarray,
                  members: np.ndarray) -> dict:
    """End to end, disease recall, healthy kept, their mean (the balanced accuracy of healthy against diseased) and
    the detector's AUC, over ``members``, with intervals."""
    right = answers_match(answers, truth)
    diseased, called_healthy = truth != "healthy", answers == "healthy"

    def balanced_accuracy(i: np.ndarray) -> float | None:
        sick, well = i[diseased[i]], i[~diseased[i]]
        return float((1 - called_healthy[sick].mean() + called_healthy[well].mean()) / 2) if len(sick) and len(well) else None

    figures = {"end_to_end": with_interval(accuracy_of(right), members, clusters),
               "disease_recall": with_interval(accuracy_of(~called_healthy), members & diseased, clusters),
               "healthy_kept": with_interval(accuracy_of(called_healthy), members & ~diseased, clusters),
               "detector_balanced_accuracy": with_interval(balanced_accuracy, members, clusters),
               "detector_auc": with_interval(auc_of(diseased, -p_healthy), members, clusters)}
    figures["images"] = int(members.sum())
    return figures


def framed(image: Image.Image, share: float = BORDER_SHARE) -> Image.Image:
    """The slice with a black border of ``share`` of its side on each side."""
    border = (round(image.width * share), round(image.height * share))
    return ImageOps.expand(image.convert("RGB"), border=border + border, fill=0)


def framing_figures(cascade: Cascade, dataset, point: str, per_class: int = FRAMING_SCANS_PER_CLASS,
                    seed: int = SPLIT_SEED) -> dict:
    """Real held-out slices (``per_class`` of each label) as given, with a border, and mirrored: how many of the
    changed ones are refused, and how many get the same answer as the original."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(dataset["label_id"])
    chosen = np.concatenate([rng.permutation(np.flatnonzero(labels == label))[:per_class] for label in np.unique(labels)])
    originals = [dataset[int(i)]["image"].convert("RGB") for i in chosen]
    given = cascade.predict_batch(originals, operating_point=point, progress="framing: as given")
    figures = {"images": len(originals), "border_share": BORDER_SHARE}
    for name, change in (("border", framed), ("mirrored", ImageOps.mirror)):
        changed = cascade.predict_batch([change(image) for image in originals], operating_point=point,
                                        progress=f"framing: {name}")
        figures[name] = {"refused": sum(r.refused for r in changed),
                         "same_answer": sum(r.label == g.label for r, g in zip(changed, given) if not g.refused),
                         "originals_answered": sum(not g.refused for g in given)}
    figures["originals_refused"] = sum(g.refused for g in given)
    return figures


@dataclass
class OutOfFoldScans:
    """The benchmark's scans and what the cascade makes of them: each scan's calibrated stage probabilities come
    from the models that held its fold out, for every task deciding its answer."""

    dataset: Dataset
    probabilities: dict[str, np.ndarray]
    truth: np.ndarray  # label ids
    fold: np.ndarray  # each scan's grouped fold
    subjects: np.ndarray  # '' where the collection names none
    clusters: np.ndarray  # the subject, else the near-duplicate cluster: the bootstrap's unit
    parts: np.ndarray  # source_parts
    folds: dict[int, dict]  # fold -> its scan count and the tasks out of fold


def out_of_fold_scans(cascade: Cascade, sources: list[str], fold_models: Sequence[Path] = (),
                      batch_size: int = 16) -> OutOfFoldScans:
    """The scans of the fold the shipped models held out and of every fold that ``fold_models`` held out, each
    kept where every task deciding its answer (``evaluation.tasks_deciding``) is out of fold, through that
    fold's models (``fitting.fold_models_by_fold``) and the shipped temperatures. Every fold is checked to be
    the very validation split the training script held out."""
    from .data import load_sources, split_validation

    for directory in fold_models:  # (kept logits are checked against the shipped recipe, sources included)
        for task in TASKS:
            if (directory / task).is_dir():
                check_trained_on(str(directory / task), sources)
    by_fold = fold_models_by_fold(cascade.stages, fold_models)
    train = load_sources(sources)["train"]
    prints = fingerprint_dataset(train)
    groups = near_duplicate_groups(prints.thumbnails)
    assignment = fold_assignment(train["label_id"], groups, VALIDATION_FRACTION, SPLIT_SEED)
    for fold in by_fold:
        _, held_out = split_validation(train, groups, VALIDATION_FRACTION, SPLIT_SEED, fold)
        if sorted(held_out["file"]) != sorted(np.asarray(train["file"])[assignment == fold]):
            raise RuntimeError(f"the benchmark's fold {fold} is not the training script's validation split")
    labels = np.asarray(train["label_id"], dtype=object)
    chosen, logit_parts, folds = [], [], {}
    for fold, models in by_fold.items():
        answerable = np.array([tasks_deciding(label) <= models.out_of_fold for label in labels])
        members = np.flatnonzero((assignment == fold) & answerable)
        if not len(members):
            continue
        logit_parts.append(models.logits(train.select(members), batch_size, progress=f"fold {fold}"))
        chosen.append(members)
        folds[fold] = {"images": len(members), "out_of_fold": sorted(models.out_of_fold)}
    chosen = np.concatenate(chosen)
    dataset = train.select(chosen)
    subjects = np.asarray(dataset["subject"])
    return OutOfFoldScans(
        dataset=dataset,
        probabilities=cascade.calibrated({task: np.concatenate([part[task] for part in logit_parts]) for task in TASKS}),
        truth=np.asarray(dataset["label_id"], dtype=object), fold=assignment[chosen], subjects=subjects,
        clusters=np.where(subjects != "", subjects, np.char.add("cluster-", groups[chosen].astype(str))),
        parts=source_parts(dataset, [prints.sizes[i] for i in chosen]), folds=folds)


def run_benchmark(models: str, sources: list[str], batch_size: int = 16,
                  fold_models: Sequence[str | Path] = ()) -> dict:
    """Every figure of the benchmark (see the module's docstring) for the models at ``models``, out of fold over
    the fold they held out and every fold that ``fold_models`` (``train/ship.sh`` with ``FOLD=K``) held out."""
    shipped_fold = held_out_fold_of(models, sources)
    if shipped_fold is None and not fold_models:
        raise ValueError(f"the models at {models} trained on every scan: nothing is out of fold for them; give their "
                         "recipe's fold models (--fold-models, the kept logits of train/ship.sh with FOLD=K)")
    cascade = Cascade.from_pretrained(models)
    scans = out_of_fold_scans(cascade, sources, [Path(d) for d in fold_models], batch_size)
    probabilities, truth, clusters, parts = scans.probabilities, scans.truth, scans.clusters, scans.parts
    true_family = true_families(scans.dataset)
    first_half = cluster_halves(clusters)
    answers, thresholds = cross_fitted_answers(cascade, probabilities, truth, first_half)
    p_healthy = probabilities[DISEASE_DETECTOR.name][:, 0]
    alzheimer_fold = np.where(true_family == "alzheimer", scans.fold, -1)
    report = {"models": report_path(models), "fold_models": [report_path(d) for d in fold_models],
              "data": [report_path(source) for source in sources],
              "held_out_fold": shipped_fold, "folds": scans.folds, "images": len(truth),
              "clusters": int(len(np.unique(clusters))), "cross_fitted_thresholds": thresholds,
              "alzheimer_detector_auc_by_fold": {fold: auc_of(truth != "healthy", -p_healthy)(
                  np.flatnonzero(alzheimer_fold == fold)) for fold in scans.folds}}
    everything = np.ones(len(truth), dtype=bool)
    for point in tqdm(OPERATING_POINTS, desc="figures and bootstrap intervals", unit="operating point"):
        slice_level = {"all": level_figures(answers[point], truth, p_healthy, clusters, everything)}
        for family in ("alzheimer", "tumor"):
            slice_level[family] = level_figures(answers[point], truth, p_healthy, clusters, true_family == family)
        per_source = {part: level_figures(answers[point], truth, p_healthy, clusters, parts == part)
                      for part in np.unique(parts)}
        report[point] = {"slice_level": slice_level, "per_source": per_source,
                         "subject_level": subject_figures(cascade, probabilities, truth, scans.subjects, answers[point],
                                                          thresholds, first_half, point)}
    typed = np.isin(truth, TUMOR_TYPE.members())
    type_right = np.array([TUMOR_TYPE.classes[int(i)] for i in probabilities[TUMOR_TYPE.name].argmax(axis=1)]) == \
        np.array([TUMOR_TYPE.class_of.get(label, "") for label in truth])
    report["tumor_type"] = {part: with_interval(accuracy_of(type_right), typed & (parts == part), clusters)
                            for part in np.unique(parts[typed])}
    report["alzheimer_baselines"] = alzheimer_baselines(scans, probabilities, truth)
    report["alzheimer_severity"] = severity_figures(probabilities, truth, scans.subjects)
    report["series_threshold_stability"] = {
        point: series_threshold_stability(cascade, probabilities, truth, scans.subjects, point)
        for point in OPERATING_POINTS}
    framing_fold = min(scans.folds) if shipped_fold is None else shipped_fold
    report["framing"] = {**framing_figures(cascade, scans.dataset.select(np.flatnonzero(scans.fold == framing_fold)),
                                           "balanced"),
                         "fold": framing_fold, "trained_on": shipped_fold is None}
    return report


THRESHOLD_RESAMPLES = 200


def series_threshold_stability(cascade: Cascade, probabilities: dict[str, np.ndarray], truth: np.ndarray,
                               subjects: np.ndarray, point: str, seed: int = 0) -> dict:
    """How far the Alzheimer family's series threshold, fitted as ``calibrate`` fits it
    (``fit_pooled_alzheimer_points``), and the recall it gives carry over to subjects it was not fitted on: fitted
    on each of ``THRESHOLD_RESAMPLES`` bootstrap resamples of the subjects, scored on the subjects left out of that
    resample (``disease_recall``, ``healthy_kept``) and on every subject (``..._every_subject``: the spread that the
    threshold's own movement causes). Beside them, ``disease_recall_fixed_threshold``: the threshold fitted on every
    subject scored on each resample's left-out subjects, the spread that scoring a few dozen subjects alone gives.
    The 5th, 50th and 95th percentiles of each, and the threshold and its figures fitted on every subject."""
    pooled, pooled_truth, named = pooled_subjects(probabilities, truth, subjects)
    alzheimer = scan_families(pooled[ALZHEIMER_VS_TUMOR.name]) == FAMILIES[0]
    pooled = {task: p[alzheimer] for task, p in pooled.items()}
    pooled_truth = pooled_truth[alzheimer]
    diseased, p_healthy = pooled_truth != "healthy", pooled[DISEASE_DETECTOR.name][:, 0]
    def threshold_of(members: np.ndarray) -> float:
        fitted = fit_pooled_alzheimer_points(cascade, {task: p[members] for task, p in pooled.items()},
                                             pooled_truth[members])
        return fitted["operating_points"][point][FAMILIES[0]]

    def recall_and_kept(threshold: float, members: np.ndarray) -> tuple[float, float]:
        healthy = healthy_above(p_healthy[members], threshold)
        return float((~healthy[diseased[members]]).mean()), float(healthy[~diseased[members]].mean())

    everyone = np.arange(len(pooled_truth))
    fitted_on_everyone = threshold_of(everyone)
    rng = np.random.default_rng(seed)
    figures: dict[str, list[float]] = {name: [] for name in (
        "threshold", "disease_recall", "healthy_kept", "disease_recall_every_subject", "healthy_kept_every_subject",
        "disease_recall_fixed_threshold")}
    for _ in range(THRESHOLD_RESAMPLES):
        drawn = rng.integers(0, len(pooled_truth), len(pooled_truth))
        left_out = np.setdiff1d(everyone, drawn)
        if not diseased[drawn].any() or diseased[drawn].all() or not diseased[left_out].any() or diseased[left_out].all():
            continue
        threshold = threshold_of(drawn)
        figures["threshold"].append(threshold)
        for suffix, members in (("", left_out), ("_every_subject", everyone)):
            recall, kept = recall_and_kept(threshold, members)
            figures[f"disease_recall{suffix}"].append(recall)
            figures[f"healthy_kept{suffix}"].append(kept)
        figures["disease_recall_fixed_threshold"].append(recall_and_kept(fitted_on_everyone, left_out)[0])

    def spread(values: list[float]) -> dict:
        low, median, high = np.percentile(values, [5, 50, 95])
        return {"p5": float(low), "median": float(median), "p95": float(high)}

    recall, kept = recall_and_kept(fitted_on_everyone, everyone)
    return {"resamples": len(figures["threshold"]), "subjects": int(len(pooled_truth)),
            "fitted_on_every_subject": {"threshold": fitted_on_everyone, "disease_recall": recall, "healthy_kept": kept},
            **{name: spread(values) for name, values in figures.items()}}


def alzheimer_baselines(scans: OutOfFoldScans, probabilities: dict[str, np.ndarray], truth: np.ndarray) -> dict:
    """The detector's subject-level AUC beside the one-line baselines (``atrophy``), on the same subjects and the same
    out-of-fold slices: the dark (CSF) share and the histogram regression."""
    from .atrophy import baseline_figures, out_of_fold_histogram_scores, subject_measures

    pooled, pooled_truth, named = pooled_subjects(probabilities, truth, scans.subjects)
    if not len(named):
        return {}
    members = np.flatnonzero(scans.subjects != "")
    dark, histograms = subject_measures(scans.dataset.select(members)["image"], scans.subjects[members], named)
    demented = (pooled_truth != "healthy").astype(int)
    return baseline_figures(-pooled[DISEASE_DETECTOR.name][:, 0], dark,
                            out_of_fold_histogram_scores(histograms, demented), demented, with_interval)


def severity_figures(probabilities: dict[str, np.ndarray], truth: np.ndarray, subjects: np.ndarray) -> dict:
    """How far stage 3 tells a new patient's severity, per subject with dementia (its slices pooled as a series):
    how often its pooled severity is the subject's, beside always answering the most common severity; and, for very
    mild (CDR 0.5) against mild or worse, its balanced accuracy and AUC. Stage 3 alone, whatever the detector said."""
    pooled, pooled_truth, named = pooled_subjects(probabilities, truth, subjects)
    demented = np.isin(pooled_truth, ALZHEIMER_SEVERITY.members())
    if not demented.any():
        return {}
    severity = pooled[ALZHEIMER_SEVERITY.name][demented]
    true_class = np.array([ALZHEIMER_SEVERITY.class_index(label) for label in pooled_truth[demented]])
    said = severity.argmax(axis=1)
    most_common = int(np.bincount(true_class).argmax())
    everyone, names = np.ones(len(true_class), dtype=bool), named[demented]
    worse, said_worse = true_class > 0, said > 0

    def balanced(i: np.ndarray) -> float | None:
        if worse[i].all() or not worse[i].any():
            return None
        return float((said_worse[i][worse[i]].mean() + (~said_worse[i][~worse[i]]).mean()) / 2)

    return {"subjects": int(len(true_class)),
            "by_severity": {ALZHEIMER_SEVERITY.classes[k]: int((true_class == k).sum()) for k in np.unique(true_class)},
            "right": with_interval(accuracy_of(said == true_class), everyone, names),
            "always_most_common": {"severity": ALZHEIMER_SEVERITY.classes[most_common],
                                   **with_interval(accuracy_of(true_class == most_common), everyone, names)},
            "mild_or_worse_balanced_accuracy": with_interval(balanced, everyone, names),
            "mild_or_worse_auc": with_interval(auc_of(worse, severity[:, 1:].sum(axis=1)), everyone, names)}


def subject_figures(cascade: Cascade, probabilities: dict[str, np.ndarray], truth: np.ndarray, subjects: np.ndarray,
                    slice_answers: np.ndarray, thresholds: dict, first_half: np.ndarray, point: str) -> dict:
    """Each named subject's held-out slices pooled into one answer (``fitting.pooled_subjects``, as the Space's
    series tab does) under the series thresholds fitted on the other half of the subjects
    (``fitting.fit_series_operating_points``, as ``calibrate`` fits them); and, as baselines, the pooled answer
    under the slice thresholds its slices were answered with, and the majority of its slices' own answers."""
    pooled, pooled_truth, named = pooled_subjects(probabilities, truth, subjects)
    if not len(named):
        return {}
    in_first_half = np.array([first_half[subjects == subject][0] for subject in named])
    p_healthy = pooled[DISEASE_DETECTOR.name][:, 0]
    series_thresholds = {}
    for half, fitted_on in zip(HALVES, (~first_half, first_half)):
        fitted = fit_series_operating_points(cascade, {task: p[fitted_on] for task, p in probabilities.items()},
                                             truth[fitted_on], subjects[fitted_on], thresholds[half])
        series_thresholds[half] = (fitted["operating_points"] if fitted else thresholds[half])[point]
    answers = {"series": answered_with(cascade, pooled, series_thresholds, in_first_half),
               "slice": answered_with(cascade, pooled, {half: thresholds[half][point] for half in HALVES},
                                      in_first_half)}
    majority = []
    for subject in named:
        values, counts = np.unique(slice_answers[subjects == subject].astype(str), return_counts=True)
        majority.append(values[counts.argmax()])
    everyone = np.ones(len(named), dtype=bool)
    figures = level_figures(answers["series"], pooled_truth, p_healthy, named, everyone)
    figures["with_slice_thresholds"] = level_figures(answers["slice"], pooled_truth, p_healthy, named, everyone)
    figures["majority_of_slices_end_to_end"] = with_interval(
        accuracy_of(answers_match(np.array(majority, dtype=object), pooled_truth)), everyone, named)
    figures["cross_fitted_series_thresholds"] = series_thresholds
    figures["subjects"] = len(named)
    return figures
