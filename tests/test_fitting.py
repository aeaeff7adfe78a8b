"""Fitting the operating points on validation probabilities: per family, balanced and screening."""

import json
import shutil

import numpy as np
import pytest
from conftest import make_image_folder, save_tiny_models

from mri_cascade import Cascade
from mri_cascade.decisions import calls_healthy, scan_families
from mri_cascade.images import load_image
from mri_cascade.labels import TASKS
from mri_cascade.loading import load_stage, load_stages
from mri_cascade.research import audit
from mri_cascade.research.data import load_sources, split_validation
from mri_cascade.research.fitting import (
    SCREENING_DISEASE_RECALL,
    VALIDATION_FIGURES_FILE,
    best_accuracy_threshold,
    calibrate_models,
    equal_error_threshold,
    fit_operating_points,
    fit_series_operating_points,
    fold_models_by_fold,
    held_out_fold,
    held_out_logits,
    keep_fold_logits,
    stored_validation_figures,
    unseen_subject_models,
    update_config,
)
from mri_cascade.research.fold_logits import RECORD_DEFAULTS, FoldLogits


def test_best_accuracy_threshold_on_a_known_case():
    # healthy scores 0.7, 0.8, 0.9; diseased 0.1, 0.2, 0.75 (the cascade's disease answer right for all three)
    p = np.array([0.7, 0.8, 0.9, 0.1, 0.2, 0.75])
    healthy = np.array([True, True, True, False, False, False])
    right = np.array([False, False, False, True, True, True])
    # t in [0.2, 0.7) gets 5 of 6; t in [0.75, 0.8) also 5 of 6: the higher one wins, midway between 0.75 and 0.8
    assert best_accuracy_threshold(p, healthy, right) == pytest.approx(0.775)
    # when the disease answers are all wrong, every healthy scan must be called healthy
    assert (p[healthy] > best_accuracy_threshold(p, healthy, np.zeros(6, bool))).all()


def test_best_accuracy_threshold_beats_every_other_threshold():
    rng = np.random.default_rng(3)
    healthy = rng.random(300) < 0.5
    p = np.clip(np.where(healthy, 0.65, 0.35) + rng.normal(0, 0.2, 300), 0, 1)
    right = ~healthy & (rng.random(300) < 0.7)
    accuracy = lambda t: np.where(p > t, healthy, right).mean()  # noqa: E731
    best = best_accuracy_threshold(p, healthy, right)
    assert all(accuracy(best) >= accuracy(t) for t in np.linspace(0, 1, 501))


def _validation_set(rng, n: int, family: str, separation: float) -> tuple[dict, np.ndarray]:
    """Calibrated-looking stage probabilities for n scans of one family, half healthy."""
    healthy = np.arange(n) < n // 2
    p_healthy = np.clip(np.where(healthy, 0.5 + separation, 0.5 - separation) + rng.normal(0, 0.15, n), 0.001, 0.999)
    alzheimer = np.full(n, 0.95 if family == "alzheimer" else 0.05)
    truth = np.where(healthy, "healthy", "alzheimer_very_mild" if family == "alzheimer" else "tumor_glioma")
    return {
        "disease-detector": np.stack([p_healthy, 1 - p_healthy], axis=1),
        "alzheimer-vs-tumor": np.stack([alzheimer, 1 - alzheimer], axis=1),
        "alzheimer-severity": np.tile([0.8, 0.15, 0.05], (n, 1)),
        "tumor-type": np.tile([0.7, 0.2, 0.1], (n, 1)),
    }, truth


def test_operating_points_are_fitted_per_family(tmp_path):
    cascade = Cascade.from_pretrained(save_tiny_models(tmp_path))
    rng = np.random.default_rng(0)
    hard, hard_truth = _validation_set(rng, 400, "alzheimer", 0.1)  # the Alzheimer family is the harder one
    easy, easy_truth = _validation_set(rng, 200, "tumor", 0.3)
    probabilities = {task: np.concatenate([hard[task], easy[task]]) for task in hard}
    truth = np.concatenate([hard_truth, easy_truth])
    fitted = fit_operating_points(cascade, probabilities, truth)
    points = fitted["operating_points"]
    families = scan_families(probabilities["alzheimer-vs-tumor"])
    p_healthy, is_disease = probabilities["disease-detector"][:, 0], truth != "healthy"
    for family in ("alzheimer", "tumor"):
        members = (families == family) & is_disease
        screening = points["screening"][family]
        recall = (~calls_healthy(p_healthy[members], families[members], points["screening"])).mean()
        assert recall >= SCREENING_DISEASE_RECALL
        # the lowest such threshold (unless balanced is higher): the next lower disease score breaks the target
        assert screening >= points["balanced"][family]
        if screening > points["balanced"][family]:
            lower = p_healthy[members][p_healthy[members] < screening].max()
            assert (p_healthy[members] <= lower).mean() < SCREENING_DISEASE_RECALL
        assert fitted["validation"]["screening"][family]["disease_recall"] == pytest.approx(recall)
    assert points["screening"]["alzheimer"] > points["balanced"]["alzheimer"]  # the test must see the 95 % rule
    assert points["balanced"]["alzheimer"] != points["balanced"]["tumor"]
    assert points["screening"]["alzheimer"] != points["screening"]["tumor"]
    # balanced is the most accurate of all thresholds, per family
    for family in ("alzheimer", "tumor"):
        members = families == family
        best = fitted["validation"]["balanced"][family]["end_to_end_accuracy"]
        for t in np.linspace(0, 1, 101):
            labels = np.where(p_healthy[members] > t, "healthy", np.where(
                families[members] == "alzheimer", "alzheimer_very_mild", "tumor_glioma"))
            assert best >= (labels == truth[members]).mean() - 1e-12


def test_the_equal_error_threshold_balances_recall_and_healthy_kept_where_accuracy_would_not():
    """Diseased 0.1-0.65, healthy 0.5-0.9: at 0.625 (and 0.55) 5 of 6 diseases are found and 3 of 4 healthy kept,
    the closest the two come; the most accurate threshold, 0.675, finds all six and keeps 3 of 4. Catches the
    accuracy rule in its place and a gap taken without its absolute value."""
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.65, 0.5, 0.7, 0.8, 0.9])
    healthy = np.array([False] * 6 + [True] * 4)
    assert equal_error_threshold(p, healthy) == pytest.approx(0.625)
    assert best_accuracy_threshold(p, healthy, ~healthy) == pytest.approx(0.675)
    with pytest.raises(ValueError, match="healthy and diseased"):
        equal_error_threshold(p[:6], healthy[:6])


def test_the_series_balanced_threshold_is_the_equal_error_point_of_the_pooled_subjects(tmp_path):
    """The scores above as ten subjects of one slice each: the series threshold is 0.625, not the accuracy
    maximum a slice threshold would take."""
    cascade = Cascade.from_pretrained(save_tiny_models(tmp_path))
    p_healthy = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.65, 0.5, 0.7, 0.8, 0.9])
    probabilities = {"disease-detector": np.c_[p_healthy, 1 - p_healthy],
                     "alzheimer-vs-tumor": np.tile([0.9, 0.1], (10, 1)),
                     "alzheimer-severity": np.tile([0.8, 0.1, 0.1], (10, 1)), "tumor-type": np.tile([0.4, 0.3, 0.3], (10, 1))}
    truth = np.array(["alzheimer_very_mild"] * 6 + ["healthy"] * 4, dtype=object)
    slice_points = {"balanced": {"alzheimer": 0.3, "tumor": 0.61}, "screening": {"alzheimer": 0.3, "tumor": 0.62}}
    fitted = fit_series_operating_points(cascade, probabilities, truth, np.array([f"s{i}" for i in range(10)]),
                                         slice_points)
    assert fitted["operating_points"]["balanced"]["alzheimer"] == pytest.approx(0.625)
    assert fit_operating_points(cascade, probabilities, truth, families=("alzheimer",))[
        "operating_points"]["balanced"]["alzheimer"] == pytest.approx(0.675)


def test_series_thresholds_are_fitted_on_pooled_subjects_for_alzheimers_only(tmp_path):
    """Four Alzheimer subjects of two slices each. One slice of each healthy subject looks diseased, so no slice
    threshold separates the classes (the best on slices is 0.675), but the subjects' means (0.65 healthy, 0.4
    diseased) do. Catches fitting on
    slices instead of pooled subjects, and fitting the tumor family without any tumor patients."""
    cascade = Cascade.from_pretrained(save_tiny_models(tmp_path))
    p_healthy = np.array([0.95, 0.35, 0.95, 0.35, 0.4, 0.4, 0.4, 0.4])
    probabilities = {"disease-detector": np.c_[p_healthy, 1 - p_healthy],
                     "alzheimer-vs-tumor": np.tile([0.9, 0.1], (8, 1)),
                     "alzheimer-severity": np.tile([0.8, 0.1, 0.1], (8, 1)), "tumor-type": np.tile([0.4, 0.3, 0.3], (8, 1))}
    truth = np.array(["healthy"] * 4 + ["alzheimer_very_mild"] * 4, dtype=object)
    subjects = np.repeat(["h1", "h2", "d1", "d2"], 2)
    slice_points = {"balanced": {"alzheimer": 0.3, "tumor": 0.61}, "screening": {"alzheimer": 0.3, "tumor": 0.62}}
    fitted = fit_series_operating_points(cascade, probabilities, truth, subjects, slice_points)
    points = fitted["operating_points"]
    assert 0.4 < points["balanced"]["alzheimer"] < 0.65  # between the pooled classes: all four subjects right
    assert points["balanced"]["tumor"] == 0.61 and points["screening"]["tumor"] == 0.62
    assert fitted["validation_subjects"] == 4
    assert fitted["validation"]["balanced"]["alzheimer"]["end_to_end_accuracy"] == 1.0


def test_screening_never_misses_more_diseases_than_balanced(tmp_path):
    cascade = Cascade.from_pretrained(save_tiny_models(tmp_path))
    rng = np.random.default_rng(2)
    # well separated: the most accurate threshold already finds every disease, above the 95 % one
    parts = [_validation_set(rng, 200, family, 0.45) for family in ("alzheimer", "tumor")]
    probabilities = {task: np.concatenate([p[task] for p, _ in parts]) for task in parts[0][0]}
    fitted = fit_operating_points(cascade, probabilities, np.concatenate([t for _, t in parts]))
    for family in ("alzheimer", "tumor"):
        assert fitted["operating_points"]["screening"][family] == fitted["operating_points"]["balanced"][family]
        assert fitted["validation"]["screening"][family]["disease_recall"] == fitted["validation"]["balanced"][family][
            "disease_recall"]


def test_a_family_without_diseased_validation_scans_is_a_clear_error(tmp_path):
    cascade = Cascade.from_pretrained(save_tiny_models(tmp_path))
    probabilities, truth = _validation_set(np.random.default_rng(1), 50, "alzheimer", 0.2)
    with pytest.raises(ValueError, match="no diseased scans that stage 2 calls tumor"):
        fit_operating_points(cascade, probabilities, truth)


@pytest.fixture(scope="module")
def fold_setup(tmp_path_factory):
    """Shipped tiny models (the detector with test-time flips), a folder holding a detector that held out fold 1,
    and a training split of 8 scans per class."""
    root = tmp_path_factory.mktemp("folds")
    models = save_tiny_models(root / "models")
    update_config(models / "disease-detector", {"test_time_flips": True})
    fold_models = save_tiny_models(root / "fold1", seed=7)
    for task in ("alzheimer-vs-tumor", "alzheimer-severity", "tumor-type"):
        shutil.rmtree(fold_models / task)
    args = {"validation": "fold", "validation_fold": 1, "seed": 42, "validation_fraction": 0.15}
    (fold_models / "disease-detector" / "training_args.json").write_text(json.dumps(args))
    make_image_folder(root / "alzheimer", {"train": dict.fromkeys(
        ["NonDemented", "VeryMildDemented", "MildDemented", "ModerateDemented"], 8)}, seed=11)
    make_image_folder(root / "brain_tumor", {"train": dict.fromkeys(
        ["no_tumor", "glioma_tumor", "meningioma_tumor", "pituitary_tumor"], 8)}, seed=12)
    train = load_sources([str(root / "alzheimer"), str(root / "brain_tumor")])["train"]
    return models, fold_models, train


def test_held_out_folds_swap_in_only_the_models_that_did_not_train_on_them(fold_setup, monkeypatch):
    models, fold_models, train = fold_setup
    monkeypatch.setattr(audit, "near_duplicate_groups", lambda thumbnails: np.arange(len(thumbnails)))
    held = held_out_logits(load_stages(models), train, [fold_models])
    assert [(part.fold, part.out_of_fold) for part in held] == [
        (0, {"disease-detector", "alzheimer-vs-tumor", "alzheimer-severity", "tumor-type"}), (1, {"disease-detector"})]
    fold_1 = split_validation(train, np.arange(len(train)), fold=1)[1]
    np.testing.assert_array_equal(held[1].truth, fold_1["label_id"])
    assert len(held[0].truth) + len(held[1].truth) <= len(train) and not np.array_equal(held[0].truth, held[1].truth)
    # fold 1 is read by the fold-1 detector, with the shipped detector's test-time flips, and the shipped other models
    for task, location, flips in (("disease-detector", fold_models, True), ("alzheimer-severity", models, False)):
        stage = load_stage(str(location / task), task)
        stage.test_time_flips = flips
        logits = stage.logits_and_embedding(stage.preprocess([load_image(image) for image in fold_1["image"]]))[0]
        columns = [stage.config.label2id[name] for name in TASKS[task].classes]
        np.testing.assert_allclose(held[1].logits[task], logits[:, columns], atol=1e-5)


def test_a_fold_model_of_the_shipped_fold_is_refused(fold_setup, tmp_path):
    models, fold_models, train = fold_setup
    shipped = load_stages(models)
    shutil.copytree(fold_models, tmp_path / "fold0")
    args_file = tmp_path / "fold0" / "disease-detector" / "training_args.json"
    args_file.write_text(json.dumps({**json.loads(args_file.read_text()), "validation_fold": 0}))
    with pytest.raises(ValueError, match="two disease-detector models held out fold 0"):  # the shipped one did
        held_out_logits(shipped, train, [tmp_path / "fold0"])
    args_file.write_text(json.dumps({**json.loads(args_file.read_text()), "validation": "cross-source"}))
    with pytest.raises(ValueError, match="did not hold out a fold of this split"):
        held_out_logits(shipped, train, [tmp_path / "fold0"])
    with pytest.raises(ValueError, match="holds no trained model"):
        held_out_logits(shipped, train, [tmp_path])
    with pytest.raises(ValueError, match="two disease-detector models held out fold 1"):
        held_out_logits(shipped, train, [fold_models, fold_models])


def test_unseen_subject_models_need_models_trained_on_the_evaluated_collections(fold_setup, tmp_path, capsys):
    models, fold_models, _ = fold_setup
    recorded = shutil.copytree(models, tmp_path / "models")
    for task in TASKS:  # as run_train.py records them: fold 0 held out of these two collections
        record = {"validation": "fold", "validation_fold": 0, "seed": 42, "validation_fraction": 0.15,
                  "data": ["../shared/data/alzheimer", "../shared/data/brain_tumor"]}
        (recorded / task / "training_args.json").write_text(json.dumps(record))
    cascade = Cascade.from_pretrained(recorded)
    by_fold = unseen_subject_models(cascade, ["data/alzheimer", "data/brain_tumor"], [fold_models])
    assert {fold: models.out_of_fold for fold, models in by_fold.items()} == {0: set(TASKS), 1: {"disease-detector"}}
    assert by_fold[1].stages["disease-detector"].location == str(fold_models / "disease-detector")
    # its own fold: its answers, not a second run of the same models
    assert by_fold[0].swapped == set() and by_fold[1].swapped == {"disease-detector"}
    # other collections, or models with no record of theirs, were split into other folds: no unseen subjects
    assert unseen_subject_models(cascade, ["data/alzheimer"]) == {}
    assert unseen_subject_models(Cascade.from_pretrained(models), ["data/alzheimer", "data/brain_tumor"]) == {}
    assert "no figures on unseen subjects" not in capsys.readouterr().err  # no fold models asked for
    # asked for fold models it cannot use: it says why, instead of leaving the section out silently
    assert unseen_subject_models(cascade, ["data/brain_tumor", "data/br35h"], [fold_models]) == {}
    assert "no figures on unseen subjects" in capsys.readouterr().err


@pytest.fixture
def kept_fold(fold_setup, tmp_path, monkeypatch):
    """Shipped tiny models of the fold-1 detector's recipe, and that detector's logits kept in a file."""
    models, fold_models, train = fold_setup
    monkeypatch.setattr(audit, "near_duplicate_groups", lambda thumbnails: np.arange(len(thumbnails)))
    shipped = shutil.copytree(models, tmp_path / "models")
    record = json.loads((fold_models / "disease-detector" / "training_args.json").read_text())
    (shipped / "disease-detector" / "training_args.json").write_text(json.dumps({**record, "validation_fold": 0}))
    kept = keep_fold_logits(shipped, fold_models, {"train": train, "test": train.select([0, 1])})
    kept.save(tmp_path / "kept" / "fold1.npz")
    return shipped, tmp_path / "kept" / "fold1.npz", train


def test_kept_fold_logits_stand_in_for_the_fold_models(fold_setup, kept_fold):
    _, fold_models, _ = fold_setup
    shipped, path, train = kept_fold
    live = held_out_logits(load_stages(shipped), train, [fold_models])
    kept = held_out_logits(load_stages(shipped), train, [path])
    assert [(part.fold, part.out_of_fold) for part in kept] == [(0, set(TASKS)), (1, {"disease-detector"})]
    for live_part, kept_part in zip(live, kept):
        for task in TASKS:  # the kept detector's logits were taken with the shipped detector's test-time flips
            np.testing.assert_allclose(kept_part.logits[task], live_part.logits[task], atol=1e-5)
    # looked up by scan, whatever the order asked in
    fold_1 = split_validation(train, np.arange(len(train)), fold=1)[1]
    order = np.arange(len(fold_1))[::-1]
    np.testing.assert_allclose(FoldLogits.load(path).lookup(fold_1.select(order))["disease-detector"],
                               live[1].logits["disease-detector"][order], atol=1e-5)
    with pytest.raises(ValueError, match="two disease-detector models held out fold 1"):
        held_out_logits(load_stages(shipped), train, [path, fold_models])
    # a kept task's model does not run again (catches the shipped detector read for nothing on every kept fold)
    stages = load_stages(shipped)

    def never(pixels):
        raise AssertionError("the kept task's model ran")

    stages["disease-detector"].start_runs = never
    fold_1_models = fold_models_by_fold(stages, [path])[1]
    np.testing.assert_allclose(fold_1_models.logits(fold_1)["disease-detector"], live[1].logits["disease-detector"],
                               atol=1e-5)


def test_records_older_than_a_training_option_count_as_its_default(kept_fold):
    """Catches a kept fold refused because the shipped models were recorded before run_train.py gained an option
    that the fold's models record at its default (or accepted when the defaults drift apart)."""
    import dataclasses

    from train import run_train

    defaults = {f.name: f.default for cls in (run_train.DataArguments, run_train.ModelArguments,
                                              run_train.RegularisationArguments) for f in dataclasses.fields(cls)}
    assert {name: defaults[name] for name in RECORD_DEFAULTS} == RECORD_DEFAULTS
    shipped, path, train = kept_fold
    record_file = shipped / "disease-detector" / "training_args.json"
    record = json.loads(record_file.read_text())
    fold_record = {**record, "validation_fold": 1, "trainable_blocks": -1}
    stored = FoldLogits.load(path)
    stored.records["disease-detector"] = fold_record
    stored.save(path)
    held_out_logits(load_stages(shipped), train, [path])  # the shipped record has no trainable_blocks: accepted
    stored.records["disease-detector"] = {**fold_record, "trainable_blocks": 4}
    stored.save(path)
    with pytest.raises(ValueError, match="another recipe"):
        held_out_logits(load_stages(shipped), train, [path])


def test_kept_fold_logits_of_another_recipe_or_other_flips_or_scans_are_refused(kept_fold, tmp_path):
    shipped, path, train = kept_fold
    record_file = shipped / "disease-detector" / "training_args.json"
    record = json.loads(record_file.read_text())
    record_file.write_text(json.dumps({**record, "learning_rate": 1.0}))
    with pytest.raises(ValueError, match="another recipe"):
        held_out_logits(load_stages(shipped), train, [path])
    record_file.write_text(json.dumps(record))
    update_config(shipped / "disease-detector", {"test_time_flips": False})
    with pytest.raises(ValueError, match="test-time flips on, the shipped model has them off"):
        held_out_logits(load_stages(shipped), train, [path])
    with pytest.raises(ValueError, match="lack 1 of the scans"):
        FoldLogits.load(path).lookup({"source": ["alzheimer"], "file": ["train/NonDemented/elsewhere.png"]})
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(b"not an archive")
    with pytest.raises(ValueError, match="not a file of kept fold logits"):
        FoldLogits.load(damaged)


def test_kept_fold_logits_stand_for_the_folds_of_a_refit_of_their_recipe(kept_fold):
    """Catches the all-subject shipped models refusing their own recipe's kept folds (their records differ in how
    they validated and chose an epoch), or accepting the folds of another recipe through that leniency."""
    shipped, path, train = kept_fold
    record_file = shipped / "disease-detector" / "training_args.json"
    record = json.loads(record_file.read_text())
    refit = {**record, "validation": "none", "best_metric": None}
    record_file.write_text(json.dumps(refit))
    held = held_out_logits(load_stages(shipped), train, [path])
    assert [(part.fold, part.out_of_fold) for part in held] == [
        (0, {"alzheimer-vs-tumor", "alzheimer-severity", "tumor-type"}), (1, {"disease-detector"})]
    record_file.write_text(json.dumps({**refit, "learning_rate": 1.0}))
    with pytest.raises(ValueError, match="another recipe"):
        held_out_logits(load_stages(shipped), train, [path])
    # a model that held out a fold still differs from the fold's in how it validated: another recipe
    record_file.write_text(json.dumps({**record, "validation": "cross-source"}))
    with pytest.raises(ValueError, match="another recipe"):
        held_out_logits(load_stages(shipped), train, [path])


@pytest.fixture
def refit(fold_setup, tmp_path):
    """The shipped tiny models with the detector refitted on every fold (run_train.py --validation none), and a
    folder holding a detector of its recipe that held out fold 0."""
    models, fold_models, _ = fold_setup
    refit = shutil.copytree(models, tmp_path / "models")
    record = {"validation": "none", "validation_fold": 0, "seed": 42, "validation_fraction": 0.15}
    (refit / "disease-detector" / "training_args.json").write_text(json.dumps(record))
    fold0 = shutil.copytree(fold_models, tmp_path / "fold0")
    (fold0 / "disease-detector" / "training_args.json").write_text(json.dumps({**record, "validation": "fold"}))
    return refit, fold0


def test_a_model_trained_on_every_fold_is_out_of_fold_only_through_its_fold_models(fold_setup, refit, monkeypatch):
    _, fold1, train = fold_setup
    models, fold0 = refit
    monkeypatch.setattr(audit, "near_duplicate_groups", lambda thumbnails: np.arange(len(thumbnails)))
    others = {"alzheimer-vs-tumor", "alzheimer-severity", "tumor-type"}  # no record: they held out fold 0
    held = held_out_logits(load_stages(models), train)
    assert [(part.fold, part.out_of_fold) for part in held] == [(0, others)]
    held = held_out_logits(load_stages(models), train, [fold0, fold1])
    assert [(part.fold, part.out_of_fold) for part in held] == [(0, set(TASKS)), (1, {"disease-detector"})]


def test_calibrating_a_model_trained_on_every_fold_needs_its_fold_models(fold_setup, refit, tmp_path, monkeypatch):
    _, _, train = fold_setup
    models, _ = refit
    monkeypatch.setattr(audit, "near_duplicate_groups", lambda thumbnails: np.arange(len(thumbnails)))
    with pytest.raises(ValueError, match="no held-out scans for disease-detector: its model trained on every fold"):
        calibrate_models(models, {"train": train, "test": train.select(range(4))}, tmp_path / "reports")


def test_operating_points_are_fitted_on_the_scans_whose_deciding_models_held_them_out(fold_setup, tmp_path,
                                                                                     monkeypatch):
    """Fold 1 has only its own detector: its diseased scans were named by models that trained on them, so only its
    healthy scans join fold 0's. Without named subjects there are no series thresholds, and stale ones go."""
    from mri_cascade.research import fitting

    shipped, fold_models, train = fold_setup
    models = shutil.copytree(shipped, tmp_path / "models")
    stale = {point: {"alzheimer": 0.5, "tumor": 0.5} for point in ("balanced", "screening")}
    update_config(models / "disease-detector", {"series_operating_points": stale})
    monkeypatch.setattr(audit, "near_duplicate_groups", lambda thumbnails: np.arange(len(thumbnails)))
    fitted_on = []

    def fixed_points(cascade, probabilities, truth, families=("alzheimer", "tumor")):
        fitted_on.append(list(truth))
        return {"operating_points": stale, "validation": {}}

    monkeypatch.setattr(fitting, "fit_operating_points", fixed_points)
    calibrate_models(models, {"train": train, "test": train.select(range(4))}, tmp_path / "reports",
                     fold_models=[fold_models])
    groups = np.arange(len(train))
    fold_0, fold_1 = (split_validation(train, groups, fold=fold)[1] for fold in (0, 1))
    healthy_of_fold_1 = [label for label in fold_1["label_id"] if label == "healthy"]
    assert sorted(fitted_on[-1]) == sorted(list(fold_0["label_id"]) + healthy_of_fold_1)
    assert "series_operating_points" not in json.loads((models / "disease-detector" / "config.json").read_text())


def test_evaluation_reads_the_validation_figures_calibrate_stored(fold_setup, refit, tmp_path):
    shipped, _, _ = fold_setup
    models, _ = refit
    assert stored_validation_figures(Cascade.from_pretrained(str(shipped)), "balanced") is None  # fold 0 validates
    calibrated = shutil.copytree(shipped, tmp_path / "calibrated")
    stored = {"folds": [0], "balanced": {"images": 7}, "screening": {"images": 7}}
    (calibrated / "disease-detector" / VALIDATION_FIGURES_FILE).write_text(json.dumps(stored))
    # what calibrate stored is read, not scored again on fold 0
    assert stored_validation_figures(Cascade.from_pretrained(str(calibrated)), "balanced") == stored["balanced"]
    with pytest.raises(ValueError, match="run `mri-cascade calibrate --fold-models`"):
        stored_validation_figures(Cascade.from_pretrained(str(models)), "balanced")
    figures = {"folds": [0], "balanced": {"images": 9}, "screening": {"images": 9, "cascade": {"accuracy": 0.5}}}
    (models / "disease-detector" / VALIDATION_FIGURES_FILE).write_text(json.dumps(figures))
    assert stored_validation_figures(Cascade.from_pretrained(str(models)), "screening") == figures["screening"]


@pytest.mark.parametrize(("record", "fold"), [
    ({"validation": "fold", "validation_fold": 2, "seed": 43, "split_seed": 42}, 2),  # another training seed, same split
    ({"validation": "fold", "validation_fold": 2, "seed": 42, "split_seed": 7}, None),  # another split
    ({"validation": "fold", "validation_fold": 2, "seed": 43}, None),  # older record: its seed seeded the split
    ({"validation": "fold", "validation_fold": 2, "seed": 42}, 2),
    ({"validation": "cross-source", "validation_fold": 0, "seed": 42}, None),
])
def test_held_out_fold_is_read_from_the_split_seed_not_the_training_seed(tmp_path, record, fold):
    (tmp_path / "training_args.json").write_text(json.dumps(record))
    assert held_out_fold(str(tmp_path), seed=42) == fold
