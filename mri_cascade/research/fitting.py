"""Fitting a whole cascade on validation data: each model's temperature, then the two operating points.

It sits above ``cascade.py``: it routes validation scans through a whole ``Cascade``. Temperatures go into each
model's ``config.json`` as ``calibration_temperature``; the operating points, a healthy threshold per scan family
each, into the disease detector's as ``operating_points``, read back by ``cascade.read_operating_points`` and
applied by ``cascade.calls_healthy``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from ..calibration import TEMPERATURE_KEY, softmax
from ..cascade import Cascade
from ..decisions import (
    OPERATING_POINTS,
    SCREENING_DISEASE_RECALL,
    calls_healthy,
    healthy_above,
    pool_series,
    scan_families,
)
from ..labels import ALZHEIMER_VS_TUMOR, DISEASE_DETECTOR, FAMILIES, TASKS, answers_match
from ..loading import (
    LEGACY_THRESHOLD_KEY,
    OPERATING_POINTS_KEY,
    SERIES_OPERATING_POINTS_KEY,
    TEST_TIME_FLIPS_KEY,
    Stage,
    load_stage,
    load_stages,
    model_weights_sha256,
    resolve_file,
)
from .calibration_fit import expected_calibration_error, fit_temperature, reliability_diagram
from .data import SPLIT_SEED, VALIDATION_FRACTION, canonical_order, fold_order_problem, split_validation
from .evaluation import cascade_figures, decision_figures, tasks_deciding, tune_healthy_threshold
from .fold_logits import FOLD_LOGITS_SUFFIX, FoldLogits, is_fold_logits_file, scan_keys

OPERATING_POINTS_FILE = "operating_points.json"
"""Validation figures of the fitted operating points, beside the disease detector's config."""
VALIDATION_FIGURES_FILE = "validation_figures.json"
"""Every evaluation figure, at both operating points, on the folds no model trained on, beside the disease
detector: how ``mri-cascade evaluate`` validates models trained on every fold."""
TRAINING_RECORD = "training_args.json"  # run_train.py's record of how a model was trained
NEVER_HEALTHY = dict.fromkeys(FAMILIES, 1.0)  # P(healthy) > 1 never holds: every scan takes the disease path


def threshold_candidates(p_healthy: np.ndarray) -> np.ndarray:
    """0, the points midway between neighbouring distinct scores, and 1: one threshold per interval of equal
    decisions, in its middle."""
    scores = np.unique(p_healthy)
    return np.concatenate([[0.0], (scores[:-1] + scores[1:]) / 2, [1.0]])


def best_accuracy_threshold(p_healthy: np.ndarray, is_healthy: np.ndarray, disease_answer_right: np.ndarray) -> float:
    """The threshold t (healthy iff P(healthy) > t) with the most right end-to-end answers: a scan called healthy
    is right when it is healthy, one called diseased when the cascade's disease answer for it is right.

    Candidates lie midway between neighbouring scores (plus 0 and 1), so the choice sits in the middle of its
    interval of equal decisions; between equally good candidates the higher one (more disease recall) wins.
    """
    p_healthy = np.asarray(p_healthy, dtype=float)
    if p_healthy.size == 0:
        raise ValueError("no validation scans to fit a threshold on")
    candidates = threshold_candidates(p_healthy)
    called_healthy = healthy_above(p_healthy[None, :], candidates[:, None])
    right = np.where(called_healthy, is_healthy[None, :], disease_answer_right[None, :]).sum(axis=1)
    best = np.flatnonzero(right == right.max())
    return float(candidates[best[-1]])


def equal_error_threshold(p_healthy: np.ndarray, is_healthy: np.ndarray) -> float:
    """The threshold t (healthy iff P(healthy) > t) where disease recall and healthy kept are closest, among
    ``threshold_candidates``; between equally close candidates the higher one wins."""
    p_healthy = np.asarray(p_healthy, dtype=float)
    if not is_healthy.any() or is_healthy.all():
        raise ValueError("an equal-error threshold needs healthy and diseased validation scans")
    candidates = threshold_candidates(p_healthy)
    called_healthy = healthy_above(p_healthy[None, :], candidates[:, None])
    gap = np.abs((~called_healthy[:, ~is_healthy]).mean(axis=1) - called_healthy[:, is_healthy].mean(axis=1))
    return float(candidates[np.flatnonzero(np.isclose(gap, gap.min()))[-1]])


def family_thresholds(p_healthy: np.ndarray, is_healthy: np.ndarray, disease_answer_right: np.ndarray,
                      equal_error: bool = False) -> dict[str, float]:
    """One family's two thresholds (see ``fit_operating_points``) from its scans' P(healthy), which of them are
    healthy, and whether the cascade's disease answer to each is right; ``balanced`` at the equal-error point
    instead of the best accuracy when ``equal_error``."""
    balanced = (equal_error_threshold(p_healthy, is_healthy) if equal_error
                else best_accuracy_threshold(p_healthy, is_healthy, disease_answer_right))
    screening = tune_healthy_threshold(p_healthy, is_healthy, SCREENING_DISEASE_RECALL)["threshold"]
    return {"balanced": balanced, "screening": max(balanced, screening)}


def fit_operating_points(cascade: Cascade, stage_probabilities: dict[str, np.ndarray], truth: np.ndarray,
                         families: Sequence[str] = FAMILIES, equal_error: bool = False) -> dict:
    """Both operating points from calibrated validation probabilities and the true label ids.

    A scan's family is what stage 2 says, as in the cascade. ``balanced`` takes, per family, the threshold with
    the best end-to-end accuracy; ``screening`` the lowest threshold with >= 95 % disease recall, so that as many
    healthy scans as possible stay healthy, but never one below ``balanced``: screening must not miss more
    diseases than the default. With ``equal_error``, ``balanced`` is instead where disease recall equals healthy
    kept (``equal_error_threshold``). Only ``families`` are fitted (each must hold diseased scans). Returns the
    thresholds and their validation figures.
    """
    truth = np.asarray(truth)
    scan_family = scan_families(stage_probabilities[ALZHEIMER_VS_TUMOR.name])
    p_healthy = stage_probabilities[DISEASE_DETECTOR.name][:, 0]
    disease_answers = np.array([r.label for r in cascade.combine(stage_probabilities, thresholds=NEVER_HEALTHY)])
    is_healthy = truth == "healthy"
    points: dict[str, dict[str, float]] = {point: {} for point in OPERATING_POINTS}
    for family in families:
        members = scan_family == family
        if not (~is_healthy[members]).any():
            raise ValueError(f"the validation data holds no diseased scans that stage 2 calls {family}")
        fitted = family_thresholds(p_healthy[members], is_healthy[members],
                                   answers_match(disease_answers[members], truth[members]), equal_error)
        for point in OPERATING_POINTS:
            points[point][family] = fitted[point]
    validation = {}
    fitted_scans = np.isin(scan_family, list(families))
    for point, thresholds in points.items():
        labels = np.where(calls_healthy(p_healthy[fitted_scans], scan_family[fitted_scans], thresholds), "healthy",
                          disease_answers[fitted_scans])
        validation[point] = decision_figures(truth[fitted_scans], labels, scan_family[fitted_scans])
    detector_auc = {family: float(roc_auc_score(~is_healthy[scan_family == family], -p_healthy[scan_family == family]))
                    for family in families if len(set(is_healthy[scan_family == family])) == 2}
    return {"operating_points": points, "screening_disease_recall": SCREENING_DISEASE_RECALL,
            "validation": validation, "validation_detector_auc": detector_auc, "validation_images": int(len(truth))}


def pooled_subjects(stage_probabilities: dict[str, np.ndarray], truth: np.ndarray,
                    subjects: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Each named subject's slices pooled as one series (``decisions.pool_series``): their probabilities (one row
    per subject), true labels and names."""
    named = np.unique(subjects[subjects != ""])
    pooled = [pool_series({task: p[subjects == subject] for task, p in stage_probabilities.items()}) for subject in named]
    probabilities = {task: np.concatenate([p[task] for p in pooled]) if pooled else np.zeros((0, 0))
                     for task in stage_probabilities}
    return probabilities, np.array([truth[subjects == subject][0] for subject in named], dtype=object), named


def fit_series_operating_points(cascade: Cascade, stage_probabilities: dict[str, np.ndarray], truth: np.ndarray,
                                subjects: np.ndarray, slice_points: dict[str, dict[str, float]]) -> dict | None:
    """Both operating points for a patient's series, fitted on the subjects' pooled probabilities
    (``pooled_subjects``): a mean over slices is less extreme than one slice, so the slice thresholds call too
    many series diseased. Only the Alzheimer collection names its subjects, so the Alzheimer family's thresholds
    are fitted (``fit_pooled_alzheimer_points``) and the tumor family's are the slice ones, ``slice_points``. None
    when no diseased subject is named: a series is then answered with the slice thresholds."""
    probabilities, pooled_truth, named = pooled_subjects(stage_probabilities, truth, subjects)
    if not len(named):
        return None
    alzheimer = scan_families(probabilities[ALZHEIMER_VS_TUMOR.name]) == FAMILIES[0]
    if not (pooled_truth[alzheimer] != "healthy").any():
        return None
    fitted = fit_pooled_alzheimer_points(cascade, {task: p[alzheimer] for task, p in probabilities.items()},
                                         pooled_truth[alzheimer])
    fitted["operating_points"] = {point: {**slice_points[point], **thresholds}
                                  for point, thresholds in fitted["operating_points"].items()}
    fitted["validation_subjects"] = int(alzheimer.sum())
    return fitted


def fit_pooled_alzheimer_points(cascade: Cascade, pooled: dict[str, np.ndarray], pooled_truth: np.ndarray) -> dict:
    """The Alzheimer family's series thresholds from pooled subjects that stage 2 calls Alzheimer's
    (``fit_operating_points``), ``balanced`` at the equal-error point: with a hundred-odd subjects the curve of
    end-to-end accuracy is flat at its top and its maximum jumps between far-apart thresholds from one sample of
    subjects to another (the benchmark's ``series_threshold_stability``), where the point of equal disease
    recall and healthy kept moves little."""
    return fit_operating_points(cascade, pooled, pooled_truth, families=FAMILIES[:1], equal_error=True)


def update_config(model_dir: Path, changes: dict, remove: Sequence[str] = ()) -> None:
    """Set ``changes`` in (and drop the keys ``remove`` from) a model folder's ``config.json``."""
    config_path = Path(model_dir) / "config.json"
    config = json.loads(config_path.read_text())
    config.update(changes)
    for key in remove:
        config.pop(key, None)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def set_test_time_flips(models_dir: Path, tasks: Sequence[str]) -> None:
    """Switch test-time flips on for ``tasks`` and off for the other models, in their configs."""
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise ValueError(f"unknown task(s) {', '.join(unknown)}; expected some of {', '.join(TASKS)}")
    for name in TASKS:
        update_config(Path(models_dir) / name, {TEST_TIME_FLIPS_KEY: name in tasks})


@dataclass
class HeldOut:
    """One validation fold's logits, through the shipped models with that fold's own models swapped in."""

    fold: int
    logits: dict[str, np.ndarray]
    truth: np.ndarray  # label ids
    out_of_fold: set[str]  # the tasks whose model never trained on this fold
    subjects: np.ndarray  # each scan's subject, '' where its collection names none


def held_out_fold(location: str, validation_fraction: float = VALIDATION_FRACTION, seed: int = SPLIT_SEED) -> int | None:
    """The grouped fold of this split (``data.split_validation``) that a model's training held out, read from the
    ``training_args.json`` that ``run_train.py`` writes beside it: None when it held out none of them (trained on
    every scan, ``--validation none``, or validated another way, or on another split). A model without that record
    is taken to have held out fold 0, the training script's default. ``seed`` is the split's seed: the record's
    ``split_seed``, or for records older than that field its training ``seed``, which then seeded the split too."""
    path = resolve_file(location, TRAINING_RECORD)
    if path is None:
        return 0
    args = json.loads(Path(path).read_text())
    if (args.get("validation", "fold") != "fold" or args.get("split_seed", args.get("seed", seed)) != seed
            or args.get("validation_fraction", validation_fraction) != validation_fraction):
        return None
    return int(args.get("validation_fold", 0))


@dataclass
class FoldModels:
    """The shipped stages with the models that held out one fold swapped in, or their kept logits."""

    stages: dict[str, Stage]
    out_of_fold: set[str]  # the tasks whose model never trained on this fold
    swapped: set[str] = field(default_factory=set)  # the tasks a fold model answers, rather than the shipped one
    kept: dict[str, FoldLogits] = field(default_factory=dict)  # task -> its fold model's kept logits

    def logits(self, scans, batch_size: int = 8, progress: str | None = None) -> dict[str, np.ndarray]:
        """Every task's logits on ``scans`` (a dataset with ``image``, ``source`` and ``file``): a kept task's
        from its file, only the others through their models (``progress``: a bar's description, as in
        ``Cascade.run_models``)."""
        live = [task for task in TASKS if task not in self.kept]
        logits = Cascade(self.stages).stage_logits(scans["image"], batch_size, tasks=live,
                                                   progress=progress) if live else {}
        for stored in set(self.kept.values()):
            logits.update({task: values for task, values in stored.lookup(scans).items() if self.kept[task] is stored})
        return logits


def fold_models_by_fold(shipped: dict[str, Stage], fold_models: Sequence[Path] = (),
                        validation_fraction: float = VALIDATION_FRACTION,
                        seed: int = SPLIT_SEED) -> dict[int, FoldModels]:
    """Every fold of the grouped split that some model held out, with the ``shipped`` stages and that fold's
    models from ``fold_models`` swapped in: ``run_train.py --validation_fold K`` output folders, or their logits
    kept by ``keep_fold_logits`` (``fold_logits.FoldLogits``, checked against the shipped recipe). A shipped model
    is out of fold on the fold its own training held out (``held_out_fold``; none if it trained on every scan), a
    swapped-in one on its fold; the swapped-in models run with the shipped ones' test-time flips."""
    shipped_folds = {task: held_out_fold(stage.location, validation_fraction, seed) for task, stage in shipped.items()}
    warn_of_fold_order([stage.location for stage in shipped.values()] + [str(Path(d) / task) for d in fold_models
                                                                         for task in TASKS if (Path(d) / task).is_dir()])
    swaps: dict[int, dict[str, Stage]] = {}
    kept: dict[int, dict[str, FoldLogits]] = {}

    def claim(task: str, fold: int) -> None:
        if task in swaps.get(fold, {}) or task in kept.get(fold, {}) or shipped_folds[task] == fold:
            raise ValueError(f"two {task} models held out fold {fold}; give one")

    for directory in map(Path, fold_models):
        if is_fold_logits_file(directory):
            stored = FoldLogits.load(directory)
            stored.check_against({task: training_record(stage.location) for task, stage in shipped.items()},
                                 {task: stage.test_time_flips for task, stage in shipped.items()}, directory)
            for task in stored.tasks:
                claim(task, stored.fold)
                kept.setdefault(stored.fold, {})[task] = stored
            continue
        found = [task for task in TASKS if (directory / task / TRAINING_RECORD).is_file()]
        if not found:
            raise ValueError(f"{directory} holds no trained model folder (one per task, with {TRAINING_RECORD}) "
                             f"and is no file of kept fold logits (*{FOLD_LOGITS_SUFFIX})")
        for task in found:
            fold = held_out_fold(str(directory / task), validation_fraction, seed)
            if fold is None:
                raise ValueError(f"{directory / task} did not hold out a fold of this split (--validation fold, "
                                 f"seed {seed}, validation fraction {validation_fraction})")
            claim(task, fold)
            stage = load_stage(str(directory / task), task)
            stage.test_time_flips = shipped[task].test_time_flips
            swaps.setdefault(fold, {})[task] = stage
    folds = {fold for fold in shipped_folds.values() if fold is not None} | set(swaps) | set(kept)
    by_fold = {}
    for fold in sorted(folds):
        swapped = set(swaps.get(fold, {})) | set(kept.get(fold, {}))
        by_fold[fold] = FoldModels({**shipped, **swaps.get(fold, {})},
                                   swapped | {task for task, own in shipped_folds.items() if own == fold},
                                   swapped, kept.get(fold, {}))
    return by_fold


def warn_of_fold_order(locations: Sequence[str]) -> None:
    """A warning on stderr for each model among ``locations`` whose training drew its folds over its collections in
    another order than ``data.canonical_order`` (``data.fold_order_problem``)."""
    for location in locations:
        problem = fold_order_problem((training_record(location) or {}).get("data", []))
        if problem:
            print(f"warning: the model at {location}: {problem}", file=sys.stderr)


def training_record(location: str) -> dict | None:
    path = resolve_file(location, TRAINING_RECORD)
    return json.loads(Path(path).read_text()) if path else None


def held_out_logits(shipped: dict[str, Stage], train, fold_models: Sequence[Path] = (),
                    validation_fraction: float = VALIDATION_FRACTION, seed: int = SPLIT_SEED) -> list[HeldOut]:
    """Every validation fold that some model never trained on, through that fold's models
    (``fold_models_by_fold``)."""
    from .audit import fingerprint_dataset, near_duplicate_groups

    by_fold = fold_models_by_fold(shipped, fold_models, validation_fraction, seed)
    groups = near_duplicate_groups(fingerprint_dataset(train).thumbnails)
    held = []
    for fold, models in by_fold.items():
        _, validation = split_validation(train, groups, validation_fraction, seed, fold)
        print(f"fold {fold}: {len(validation)} validation images, out of fold: "
              f"{', '.join(task for task in TASKS if task in models.out_of_fold)}", flush=True)
        held.append(HeldOut(fold, models.logits(validation, progress=f"fold {fold}"), np.asarray(validation["label_id"]),
                            models.out_of_fold,
                            np.asarray(validation["subject"])))
    return held


def keep_fold_logits(models_dir: Path, fold_dir: Path, splits, batch_size: int = 16,
                     validation_fraction: float = VALIDATION_FRACTION, seed: int = SPLIT_SEED) -> FoldLogits:
    """The logits of the models in ``fold_dir`` (one fold's, ``train/ship.sh`` with ``FOLD=K``), run with the
    shipped models' test-time flips, on every scan they might answer: their fold of ``splits["train"]`` and all of
    ``splits["test"]``."""
    from datasets import concatenate_datasets

    from .audit import fingerprint_dataset, near_duplicate_groups

    shipped = load_stages(models_dir)
    by_fold = fold_models_by_fold(shipped, [fold_dir], validation_fraction, seed)
    folds = [(fold, models) for fold, models in by_fold.items() if models.swapped]
    if len(folds) != 1:
        raise ValueError(f"{fold_dir} holds models that held out folds {[fold for fold, _ in folds]}: keep one "
                         "fold's logits at a time")
    [(fold, models)] = folds
    train = splits["train"]
    _, validation = split_validation(train, near_duplicate_groups(fingerprint_dataset(train).thumbnails),
                                     validation_fraction, seed, fold)
    scans = concatenate_datasets([validation, splits["test"]])
    print(f"fold {fold}: {len(validation)} validation and {len(splits['test'])} test images through "
          f"{', '.join(sorted(models.swapped))}", flush=True)
    logits = models.logits(scans, batch_size, progress=f"fold {fold}")
    tasks = sorted(models.swapped)
    return FoldLogits(fold, {task: training_record(models.stages[task].location) for task in tasks},
                      {task: model_weights_sha256(models.stages[task].location) for task in tasks},
                      {task: bool(models.stages[task].test_time_flips) for task in tasks},
                      scan_keys(scans), {task: logits[task] for task in tasks})


def unseen_subject_models(cascade: Cascade, sources: Sequence[str], fold_models: Sequence[Path] = (),
                          validation_fraction: float = VALIDATION_FRACTION,
                          seed: int = SPLIT_SEED) -> dict[int, FoldModels]:
    """For ``evaluation.evaluate_cascade``'s test figures on unseen subjects: each held-out fold's models
    (``fold_models_by_fold``). Empty unless every model trained on ``sources``' collections in ``canonical_order``,
    so that its folds are the ones ``data.fold_assignment`` draws from them; with ``fold_models`` given, a note on
    stderr then says which model did not."""
    wanted = [Path(source).name for source in canonical_order(sources)]
    for task, stage in cascade.stages.items():
        record = training_record(stage.location) or {}
        trained_on = [Path(source).name for source in record.get("data", [])]
        if trained_on != wanted:
            if fold_models:
                print(f"note: no figures on unseen subjects: the {task} model trained on "
                      f"{', '.join(trained_on) or 'no recorded collections'}, not on {', '.join(wanted)} in that "
                      "order, so its folds are not the ones drawn here", file=sys.stderr)
            return {}
    return fold_models_by_fold(cascade.stages, fold_models, validation_fraction, seed)


def stored_validation_figures(cascade: Cascade, operating_point: str, validation_fraction: float = VALIDATION_FRACTION,
                              seed: int = SPLIT_SEED) -> dict | None:
    """The validation figures ``calibrate_models`` stored at ``operating_point`` (on the folds no model trained on,
    with the final temperatures and thresholds), so that evaluation need not score those folds again. Without
    them: None when every model held out fold 0 (fold 0 through the cascade is then its validation, as
    ``evaluation.evaluate_cascade`` computes it); an error when some did not, since nothing else can validate them."""
    path = resolve_file(cascade.stages[DISEASE_DETECTOR.name].location, VALIDATION_FIGURES_FILE)
    if path is not None:
        return json.loads(Path(path).read_text())[operating_point]
    if all(held_out_fold(stage.location, validation_fraction, seed) == 0 for stage in cascade.stages.values()):
        return None
    raise ValueError("some of these models trained on fold 0, so it cannot validate them, and the disease "
                     f"detector has no {VALIDATION_FIGURES_FILE}: run `mri-cascade calibrate --fold-models` "
                     "with models of their recipes that held out folds")


def calibrate_models(models_dir: Path, splits, out_dir: Path, validation_fraction: float = VALIDATION_FRACTION,
                     seed: int = SPLIT_SEED,
                     test_time_flips: Sequence[str] | None = None, fold_models: Sequence[Path] = ()) -> dict:
    """Fit every model's temperature on held-out predictions, then both operating points on the calibrated
    probabilities, for slices and for a patient's series (``fit_series_operating_points``); store them in the
    configs (and their validation figures in ``disease-detector/operating_points.json``); report test ECE before
    and after, at the balanced point.

    Held out means the fold each shipped model's training held out (the training script's default is fold 0)
    and every fold a model in ``fold_models`` held out (see ``held_out_logits``): each temperature is fitted on
    every fold its task's model was not trained on, the operating points on the scans of every fold the disease
    detector was not trained on whose every deciding model (``evaluation.tasks_deciding``) held it out. More
    folds mean more held-out subjects than fold 0's 22 Alzheimer subjects; a shipped model trained on every fold
    (``run_train.py --validation none``) is calibrated entirely on its fold models' folds,
    as scikit-learn's ``CalibratedClassifierCV(ensemble=False)`` calibrates a refit. Every evaluation figure on
    the folds no model trained on is stored beside the disease detector (``VALIDATION_FIGURES_FILE``).

    ``test_time_flips``, when given, names the models whose logits are averaged over each image and its mirror
    image (the others are switched off) before anything is fitted; None keeps the configs' own setting.

    "Before" is T = 1 with operating points fitted on uncalibrated probabilities, so a re-run reports the same.
    The refusal check is not loaded: it may still belong to the previous weights.
    """
    models_dir = Path(models_dir)
    if test_time_flips is not None:
        set_test_time_flips(models_dir, test_time_flips)
    shipped = load_stages(models_dir)
    held = held_out_logits(shipped, splits["train"], fold_models, validation_fraction, seed)
    cascade = Cascade(shipped)
    test_logits = cascade.stage_logits(splits["test"]["image"], progress="test split")
    test_truth = np.asarray(splits["test"]["label_id"])

    def members_and_labels(truth: np.ndarray, task) -> tuple[np.ndarray, np.ndarray]:
        members = np.isin(truth, task.members())
        return members, np.array([task.class_index(label) for label in truth[members]])

    figures = {}
    for name, task in TASKS.items():
        folds = [part for part in held if name in part.out_of_fold]
        if not folds:
            raise ValueError(f"no held-out scans for {name}: its model trained on every fold; give a model of its "
                             "recipe that held one out (--fold-models)")
        pooled = [(part.logits[name][members], labels)
                  for part in folds for members, labels in [members_and_labels(part.truth, task)]]
        held_logits, held_labels = (np.concatenate(column) for column in zip(*pooled))
        temperature = fit_temperature(held_logits, held_labels)
        figures[name] = {"temperature": temperature, "folds": [part.fold for part in folds],
                         "held_out_images": len(held_labels),
                         "held_out_accuracy": float((held_logits.argmax(axis=1) == held_labels).mean())}
        test_members, test_labels = members_and_labels(test_truth, task)
        for when, t in (("before", 1.0), ("after", temperature)):
            probabilities = softmax(test_logits[name][test_members], t)
            figures[name][f"test_ece_{when}"] = expected_calibration_error(
                probabilities.max(axis=1), probabilities.argmax(axis=1) == test_labels)
    detector_folds = [part for part in held if DISEASE_DETECTOR.name in part.out_of_fold]
    # the scans of those folds whose every deciding model is out of fold (a tumor of a fold whose tumor-type model
    # trained on it would flatter the disease path)
    answerable = [np.array([tasks_deciding(label) <= part.out_of_fold for label in part.truth]) for part in detector_folds]
    validation_truth = np.concatenate([part.truth[keep] for part, keep in zip(detector_folds, answerable)])
    validation_subjects = np.concatenate([part.subjects[keep] for part, keep in zip(detector_folds, answerable)])
    curves, end_to_end = {}, {}
    for when in ("before", "after"):
        temperatures = {name: figures[name]["temperature"] if when == "after" else 1.0 for name in TASKS}
        validation = {name: np.concatenate([softmax(part.logits[name][keep], temperatures[name])
                                            for part, keep in zip(detector_folds, answerable)]) for name in TASKS}
        fitted = fit_operating_points(cascade, validation, validation_truth)
        fitted["validation_folds"] = [part.fold for part in detector_folds]
        test = {name: softmax(test_logits[name], temperatures[name]) for name in TASKS}
        results = cascade.combine(test, thresholds=fitted["operating_points"]["balanced"])
        confidence = np.array([result.probabilities[result.label] for result in results])
        correct = answers_match([result.label for result in results], test_truth)
        curves[f"{when} scaling"] = (confidence, correct)
        end_to_end[when] = {"ece": expected_calibration_error(confidence, correct), "accuracy": float(correct.mean()),
                            "balanced_thresholds": fitted["operating_points"]["balanced"]}
    # the series thresholds from the calibrated probabilities of the last pass only
    series = fit_series_operating_points(cascade, validation, validation_truth, validation_subjects,
                                         fitted["operating_points"])
    for name in TASKS:
        update_config(models_dir / name, {TEMPERATURE_KEY: figures[name]["temperature"]})
        (models_dir / name / "calibration.json").write_text(json.dumps(figures[name], indent=2))
    detector = models_dir / DISEASE_DETECTOR.name
    update_config(detector, {OPERATING_POINTS_KEY: fitted["operating_points"]}
                  | ({SERIES_OPERATING_POINTS_KEY: series["operating_points"]} if series else {}),
                  remove=[LEGACY_THRESHOLD_KEY] + ([] if series else [SERIES_OPERATING_POINTS_KEY]))
    (detector / OPERATING_POINTS_FILE).write_text(json.dumps({**fitted, "series": series}, indent=2))
    (detector / VALIDATION_FIGURES_FILE).unlink(missing_ok=True)
    unseen = [part for part in held if part.out_of_fold == set(TASKS)]
    if unseen:
        truth = np.concatenate([part.truth for part in unseen])
        probabilities = {name: np.concatenate([softmax(part.logits[name], figures[name]["temperature"])
                                               for part in unseen]) for name in TASKS}
        stored = {point: cascade_figures(cascade, probabilities, truth, point, thresholds)
                  for point, thresholds in fitted["operating_points"].items()}
        (detector / VALIDATION_FIGURES_FILE).write_text(
            json.dumps({"folds": [part.fold for part in unseen], **stored}, indent=2))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    reliability_diagram(curves, out_dir / "reliability_cascade.png")
    report = {"models": figures, "cascade_end_to_end": end_to_end, "operating_points": fitted,
              "series_operating_points": series}
    (out_dir / "calibration.json").write_text(json.dumps(report, indent=2))
    return report
