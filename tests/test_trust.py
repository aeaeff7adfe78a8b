"""Trust: heatmaps of the deciding model, refusal of what is not a brain MRI slice."""

import numpy as np
import pytest
from conftest import synthetic_slice

from mri_cascade import Cascade, ModelLoadError
from mri_cascade.familiarity import FAMILIARITY_FILE, REFUSAL_REASON, FamiliarityCheck
from mri_cascade.research.probes import non_mri_images
from mri_cascade.service import classify, classify_series


@pytest.fixture(scope="module")
def probes():
    return non_mri_images(seed=3)


def test_heatmap_covers_the_scan_in_the_unit_range(tiny_cascade):
    scan = synthetic_slice(4, size=(150, 190), lesion=True)
    explanation = tiny_cascade.explain(scan)
    result = tiny_cascade.predict(scan)
    assert explanation.heatmap.shape == (190, 150) and explanation.heatmap.dtype == np.float32
    assert explanation.heatmap.min() >= 0.0 and explanation.heatmap.max() == pytest.approx(1.0)
    assert explanation.overlay.size == scan.size and explanation.overlay.mode == "RGB"
    assert (explanation.stage, explanation.target) == (result.stages[-1].name, result.stages[-1].decision)


def test_heatmap_changes_with_the_input(tiny_cascade):
    first, second = synthetic_slice(1, lesion=True), synthetic_slice(2, lesion=True)
    result = tiny_cascade.predict(first)  # the same stage and class for both, so only the input differs
    maps = [explanation.heatmap for explanation in tiny_cascade.explain_batch([first, second], result)]
    assert not np.allclose(maps[0], maps[1], atol=1e-3)
    assert np.allclose(tiny_cascade.explain(first, result).heatmap, maps[0], atol=1e-5)


def test_synthetic_brain_like_slices_are_answered(guarded_cascade):
    results = guarded_cascade.predict_batch([synthetic_slice(seed, lesion=seed % 2 == 1) for seed in range(3000, 3030)])
    assert not any(result.refused for result in results)
    assert all(result.label and result.unfamiliarity is not None and result.unfamiliarity <= 1 for result in results)


def test_generated_non_mri_pictures_are_refused(guarded_cascade, probes):
    results = guarded_cascade.predict_batch([image for _, image in probes])
    refused = {category: [] for category, _ in probes}
    for (category, _), result in zip(probes, results):
        refused[category].append(result.refused)
    # four random 16-feature networks are a weak embedding, yet they separate most of these from synthetic
    # slices (the shipped models refuse them all: test_shipped_models)
    assert all(refused["blank"]) and all(refused["noise"])
    assert np.mean([result.refused for result in results]) >= 0.9


def test_a_refusal_carries_a_reason_and_no_diagnosis(guarded_cascade, probes):
    blank = next(image for category, image in probes if category == "blank")
    result = guarded_cascade.predict(blank)
    assert result.refused and result.label is None and result.reason == REFUSAL_REASON
    assert result.probabilities == {} and result.stages == [] and result.unfamiliarity > 1
    with pytest.raises(ValueError, match="refused"):
        guarded_cascade.explain(blank, result)
    view = classify(guarded_cascade, blank)
    assert view.payload["refused"] is True and view.payload["label"] is None and view.heatmaps == []
    assert "not look like a 2-D brain MRI slice" in view.answer


def test_refusal_can_be_switched_off_for_research(guarded_cascade, probes):
    result = guarded_cascade.predict(probes[0][1], refuse_unfamiliar=False)
    assert not result.refused and result.label is not None


def test_a_series_pools_only_its_answered_slices(guarded_cascade, probes):
    scans = [synthetic_slice(seed, lesion=True) for seed in range(4000, 4003)]
    noise = next(image for category, image in probes if category == "noise")
    mixed = guarded_cascade.predict_series([*scans, noise])
    assert not mixed.refused and [item.refused for item in mixed.slices] == [False, False, False, True]
    assert mixed.probabilities == pytest.approx(guarded_cascade.predict_series(scans).probabilities)
    view, rows = classify_series(guarded_cascade, [*scans, noise])
    assert [caption for _, caption in view.heatmaps] == ["slice 1", "slice 2", "slice 3"]
    assert "from 3 slices" in view.answer and "1 of 4 slices did not look like brain MRI" in view.answer
    assert rows[3][2] is None
    assert mixed.reason.startswith("1 of 4 slices did not look like brain MRI and were left out.")
    assert mixed.unfamiliarity == pytest.approx(max(item.unfamiliarity for item in mixed.slices[:3]))
    assert view.payload["slices"][3]["refused"] and view.payload["slices"][3]["unfamiliarity"] > 1
    nothing = guarded_cascade.predict_series([noise, noise])
    assert nothing.refused and nothing.label is None and "None of the 2 slices" in nothing.reason


def test_the_refusal_check_round_trips_through_its_file(guarded_models, guarded_cascade):
    loaded = FamiliarityCheck.load(guarded_models / "disease-detector" / FAMILIARITY_FILE)
    features = guarded_cascade.run_models([synthetic_slice(9), synthetic_slice(10)])[1]
    assert np.allclose(loaded.unfamiliarity(features), guarded_cascade.familiarity.unfamiliarity(features))


def test_the_refusal_check_runs_on_one_blas_thread(guarded_cascade, monkeypatch):
    """Catches the check's matrix products running on every core: OpenBLAS's threads then spin-wait afterwards and
    starve the next scan's models. The products run on numpy's BLAS (scipy's, loaded later, is not used)."""
    import scipy.linalg  # noqa: F401  (loads scipy's BLAS after the check's thread pools were first looked up)
    from threadpoolctl import threadpool_info, threadpool_limits

    def numpy_blas_threads() -> set[int]:
        return {pool["num_threads"] for pool in threadpool_info()
                if pool["user_api"] == "blas" and "numpy" in pool["filepath"]}

    check = guarded_cascade.familiarity
    features = guarded_cascade.run_models([synthetic_slice(9)])[1]
    seen = []
    residual_ratio = type(check).residual_ratio

    def spying(self, joined):
        seen.append(numpy_blas_threads())
        return residual_ratio(self, joined)

    monkeypatch.setattr(type(check), "residual_ratio", spying)
    with threadpool_limits(limits=2, user_api="blas"):
        check.unfamiliarity(features)
        outside = numpy_blas_threads()
    assert seen == [{1}] and outside == {2}  # limited inside the check only


def test_a_check_fitted_on_other_weights_stops_the_start(guarded_models, tmp_path):
    import shutil

    models = shutil.copytree(guarded_models, tmp_path / "models")
    path = models / "disease-detector" / FAMILIARITY_FILE
    check = FamiliarityCheck.load(path)
    check.weights_sha256["tumor-type"] = "0" * 64
    check.save(path)
    with pytest.raises(ModelLoadError, match="fit-familiarity"):
        Cascade.from_pretrained(models)


def test_models_without_a_check_answer_everything(tiny_cascade, probes):
    assert tiny_cascade.familiarity is None
    assert not any(result.refused for result in tiny_cascade.predict_batch([image for _, image in probes[:5]]))


@pytest.fixture(scope="module")
def guarded_client(guarded_cascade):
    from conftest import launch_app
    from gradio_client import Client

    demo, url = launch_app(guarded_cascade)
    yield Client(url, verbose=False)
    demo.close()


def test_classify_refuses_non_mri_pictures_and_answers_scans(guarded_client, probes, tmp_path):
    from gradio_client import handle_file

    for category in ("chart", "document", "blank"):
        picture = tmp_path / f"{category}.png"
        next(image for kind, image in probes if kind == category).save(picture)
        result = guarded_client.predict(handle_file(str(picture)), api_name="/classify")
        assert result["refused"] is True and result["label"] is None and result["reason"] == REFUSAL_REASON
    scan = tmp_path / "scan.png"
    synthetic_slice(3001).save(scan)
    result = guarded_client.predict(handle_file(str(scan)), api_name="/classify")
    assert result["refused"] is False and result["label"] is not None and result["reason"] is None


def test_the_page_shows_a_refusal_without_bars_or_heatmap(guarded_client, probes, tmp_path):
    from gradio_client import handle_file

    picture = tmp_path / "noise.png"
    next(image for kind, image in probes if kind == "noise").save(picture)
    answer, path, heatmap, caption, joint, *stages = guarded_client.predict(handle_file(str(picture)), api_name="/show")
    assert "No answer" in answer and "not look like a 2-D brain MRI slice" in answer
    for panel in (path, heatmap, caption, joint):  # hidden and empty, not left on the page
        assert panel["visible"] is False and not panel["value"]


def test_an_empty_batch_gives_no_results(guarded_cascade):
    assert guarded_cascade.predict_batch([]) == []


def test_a_numpy_stack_is_a_series_of_slices(guarded_cascade):
    stack = np.stack([np.asarray(synthetic_slice(seed)) for seed in range(3)])
    assert len(guarded_cascade.predict_series(stack).slices) == 3


def test_a_large_picture_is_explained_on_a_display_copy(tiny_cascade):
    explanation = tiny_cascade.explain(synthetic_slice(6, size=(2400, 1800)))
    assert explanation.heatmap.shape == (768, 1024) and explanation.overlay.size == (1024, 768)


def test_a_failing_heatmap_keeps_the_answer(tiny_cascade, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no PyTorch weights")

    monkeypatch.setattr(tiny_cascade, "explain_batch", broken)
    view = classify(tiny_cascade, synthetic_slice(7))
    assert view.payload["label"] and view.heatmaps == [] and "heatmap could not be made" in view.answer


def test_the_second_test_learns_what_is_not_a_brain_scan_and_round_trips(tiny_models, probes, tmp_path):
    from mri_cascade.familiarity import joined_features
    from mri_cascade.research.refusal_fit import fit_familiarity, weights_sha256

    cascade = Cascade.from_pretrained(tiny_models)
    embed = lambda images: cascade.run_models(images)[1]  # noqa: E731
    train = embed([synthetic_slice(seed, lesion=seed % 2 == 1) for seed in range(80)])
    validation = embed([synthetic_slice(seed, lesion=seed % 2 == 1) for seed in range(1000, 1040)])
    others = embed([image for _, image in probes[::2]])
    check = fit_familiarity(train, validation, weights_sha256(tiny_models), 8, other_embeddings=others)
    assert check.other_weights is not None
    tasks = check.tasks
    p_validation = check.other_probability(joined_features(validation, tasks))
    p_others = check.other_probability(joined_features(others, tasks))
    # the limit sits in the margin: above every validation scan, at or below the least suspicious development picture
    assert p_validation.max() < check.other_limit
    assert check.other_limit <= max(p_others.min(), p_validation.max() * (1 + 1e-6)) + 1e-12
    assert (check.unfamiliarity(validation) <= 1).all() and (check.unfamiliarity(others) > 1).mean() > 0.9
    check.save(tmp_path / FAMILIARITY_FILE)
    loaded = FamiliarityCheck.load(tmp_path / FAMILIARITY_FILE)
    np.testing.assert_allclose(loaded.other_weights, check.other_weights, rtol=1e-6)
    assert (loaded.other_bias, loaded.other_limit) == (check.other_bias, check.other_limit)
    np.testing.assert_allclose(loaded.unfamiliarity(others), check.unfamiliarity(others), rtol=1e-4)


def test_a_series_names_the_slices_that_disagree_with_the_patient_answer(tiny_cascade, monkeypatch):
    from mri_cascade.labels import TASKS

    # nine slices lean to glioma, one is sure of meningioma; all are tumors on the disease path
    tumor_type = np.log(np.array([[0.6, 0.3, 0.1]] * 9 + [[0.01, 0.98, 0.01]]))
    logits = {"disease-detector": np.log(np.tile([0.01, 0.99], (10, 1))),
              "alzheimer-vs-tumor": np.log(np.tile([0.01, 0.99], (10, 1))),
              "alzheimer-severity": np.log(np.tile([0.4, 0.3, 0.3], (10, 1))), "tumor-type": tumor_type}
    monkeypatch.setattr(tiny_cascade, "calibrated", lambda values: {t: np.exp(v) for t, v in values.items()})
    monkeypatch.setattr(tiny_cascade, "run_models", lambda images, batch_size=8, header_notes=None, pixel_rows=None:
                        (logits, {task: np.zeros((10, 4)) for task in TASKS}))
    series = tiny_cascade.predict_series([synthetic_slice(seed) for seed in range(10)])
    assert series.label == "tumor_glioma" and series.probabilities["tumor_glioma"] == pytest.approx(0.99 * 0.99 * 0.541)
    assert series.reason == "1 of 10 answered slices on their own say otherwise: Meningioma (1)."


def test_a_vision_transformer_is_explained_on_its_patch_grid():
    """A DINOv2 stage (patch 14, class token first) gets a Grad-CAM of its last patch tokens at the input's size.
    Catches a token grid laid out from the wrong tokens (an error or a shifted map) and a ViT sent to the
    convolution path, whose only convolution is the patch embedding."""
    import torch
    from transformers import Dinov2Config, Dinov2ForImageClassification

    from mri_cascade.explain import grad_cam, token_grad_cam

    torch.manual_seed(0)
    model = Dinov2ForImageClassification(Dinov2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=14,
        image_size=56, num_labels=3))
    pixels = np.random.default_rng(0).normal(size=(2, 3, 56, 70)).astype(np.float32)
    grid = token_grad_cam(model, torch.from_numpy(pixels), 1)
    assert grid.shape == (2, 1, 4, 5)
    maps = grad_cam(model, pixels, 1)
    assert maps.shape == (2, 56, 70) and maps.min() >= 0.0 and maps.max() == pytest.approx(1.0)
    assert not np.allclose(maps, grad_cam(model, pixels, 2), atol=1e-3)  # each class has its own evidence


def test_a_series_of_mostly_refused_slices_is_refused_and_says_how_many_were_usable(guarded_cascade, probes):
    """Catches a series answered from 1 of its 4 slices (the other 3 not brain MRI) as if it were the patient's."""
    documents = [image for kind, image in probes if kind == "document"][:3]
    brains = [synthetic_slice(seed) for seed in (3000, 3002, 3004)]
    assert not any(result.refused for result in guarded_cascade.predict_batch(brains))
    sparse = guarded_cascade.predict_series([brains[0], *documents])
    assert sparse.refused and sparse.label is None
    assert sparse.reason.startswith("Only 1 of 4 slices look like brain MRI slices") and "50%" in sparse.reason
    mostly = guarded_cascade.predict_series([*brains, documents[0]])
    assert not mostly.refused and "1 of 4 slices did not look like brain MRI" in mostly.reason


def test_a_volume_refused_whole_hints_at_its_orientation(guarded_cascade, tmp_path):
    """Catches a NIfTI volume stacked along the wrong axis (its slices on axis 0, the affine saying axis 2 is
    head-to-foot) refused with no word of why: cut that way, no slice looks like a brain."""
    from conftest import nifti_bytes

    from mri_cascade.images import ImageLoadError, load_slices

    stacked = np.stack([np.asarray(synthetic_slice(k, size=(64, 64)), dtype=float) for k in range(40)], axis=0)
    volume = tmp_path / "volume.nii"
    volume.write_bytes(nifti_bytes(stacked))
    result = guarded_cascade.predict_series(str(volume))
    assert result.refused and "orientation" in result.reason
    thin = tmp_path / "thin.nii"  # the same mistake on a short stack: its cuts are 3 pixels wide
    thin.write_bytes(nifti_bytes(stacked[:3]))
    with pytest.raises(ImageLoadError, match="at least 32x32.*orientation"):
        load_slices(str(thin))
