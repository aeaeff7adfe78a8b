import numpy as np
import pytest
from conftest import free_port, jpeg_bytes, save_tiny_models, synthetic_slice

from mri_cascade import LABEL_IDS, Cascade, ModelLoadError
from mri_cascade.decisions import OPERATING_POINTS, calls_healthy
from mri_cascade.images import ImageLoadError
from mri_cascade.loading import model_location


@pytest.mark.parametrize(("threshold", "path"), [
    (0.0, ["disease-detector"]),  # P(healthy) > 0: every scan is healthy
    (1.0, ["disease-detector", "alzheimer-vs-tumor", None]),  # never healthy: the disease path to a leaf
])
def test_predict_returns_label_joint_probabilities_and_path(tiny_cascade, threshold, path):
    probabilities = tiny_cascade.stage_probabilities([synthetic_slice(0)])
    (result,) = tiny_cascade.combine(probabilities, thresholds={"alzheimer": threshold, "tumor": threshold})
    assert list(result.probabilities) == list(LABEL_IDS)
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
    names = [stage.name for stage in result.stages]
    if threshold == 0.0:
        assert result.label == "healthy" and names == path
    else:
        leaf = "alzheimer-severity" if probabilities["alzheimer-vs-tumor"][0, 0] >= 0.5 else "tumor-type"
        assert names == [*path[:2], leaf] and result.label != "healthy"
        assert result.label.startswith("alzheimer" if leaf == "alzheimer-severity" else "tumor")
    for stage in result.stages:
        assert sum(stage.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert stage.decision in stage.probabilities


def test_every_input_kind_gives_the_same_answer(tiny_cascade, tmp_path):
    image = synthetic_slice(3)
    path = tmp_path / "slice.png"
    image.save(path)
    results = [tiny_cascade.predict(x) for x in (image, path, str(path), path.read_bytes(), np.asarray(image))]
    for result in results[1:]:
        assert result.label == results[0].label
        assert result.probabilities == pytest.approx(results[0].probabilities, abs=1e-6)


def test_predict_batch_matches_single_predictions(tiny_cascade):
    images = [synthetic_slice(i, lesion=i % 2 == 0) for i in range(5)]
    batch = tiny_cascade.predict_batch(images, batch_size=2)
    for image, result in zip(images, batch):
        single = tiny_cascade.predict(image)
        assert single.label == result.label
        assert single.probabilities == pytest.approx(result.probabilities, abs=1e-5)


def _crafted(healthy: float, alzheimer: float, severity: list[float], tumor_type: list[float]):
    return {
        "disease-detector": np.array([[healthy, 1 - healthy]]),
        "alzheimer-vs-tumor": np.array([[alzheimer, 1 - alzheimer]]),
        "alzheimer-severity": np.array([severity]),
        "tumor-type": np.array([tumor_type]),
    }


def test_joint_distribution_is_the_product_along_each_path(tiny_cascade):
    (result,) = tiny_cascade.combine(_crafted(0.2, 0.75, [0.1, 0.6, 0.3], [0.5, 0.25, 0.25]))
    p = result.probabilities
    assert p["healthy"] == pytest.approx(0.2)
    assert p["alzheimer_mild"] == pytest.approx(0.8 * 0.75 * 0.6)
    assert p["alzheimer_moderate"] == pytest.approx(0.8 * 0.75 * 0.3)
    assert p["tumor_glioma"] == pytest.approx(0.8 * 0.25 * 0.5)
    assert sum(p.values()) == pytest.approx(1.0)
    assert result.label == "alzheimer_mild"
    assert [s.decision for s in result.stages] == ["disease", "alzheimer", "mild"]


def test_a_legacy_single_threshold_applies_to_both_families_and_points(tmp_path):
    cascade = Cascade.from_pretrained(save_tiny_models(tmp_path, healthy_threshold=0.9))
    assert cascade.operating_points == {point: {"alzheimer": 0.9, "tumor": 0.9} for point in OPERATING_POINTS}
    (below,) = cascade.combine(_crafted(0.85, 0.1, [1, 0, 0], [0.2, 0.3, 0.5]))
    assert below.label == "tumor_pituitary"  # 85 % healthy is not enough at a 0.9 threshold
    (above,) = cascade.combine(_crafted(0.95, 0.1, [1, 0, 0], [0.2, 0.3, 0.5]))
    assert above.label == "healthy" and [s.name for s in above.stages] == ["disease-detector"]


POINTS = {"balanced": {"alzheimer": 0.6, "tumor": 0.3}, "screening": {"alzheimer": 0.8, "tumor": 0.5}}


@pytest.fixture(scope="module")
def pointed_cascade(tmp_path_factory):
    return Cascade.from_pretrained(save_tiny_models(tmp_path_factory.mktemp("points"), operating_points=POINTS))


@pytest.mark.parametrize("point", OPERATING_POINTS)
def test_each_family_has_its_own_healthy_threshold(pointed_cascade, point):
    alzheimer_limit, tumor_limit = POINTS[point]["alzheimer"], POINTS[point]["tumor"]
    between = (alzheimer_limit + tumor_limit) / 2  # above the tumor threshold, below the Alzheimer one
    (alzheimer_scan,) = pointed_cascade.combine(_crafted(between, 0.9, [1, 0, 0], [1, 0, 0]), point)
    (tumor_scan,) = pointed_cascade.combine(_crafted(between, 0.1, [1, 0, 0], [1, 0, 0]), point)
    assert alzheimer_scan.label == "alzheimer_very_mild"
    assert tumor_scan.label == "healthy"
    assert alzheimer_scan.operating_point == tumor_scan.operating_point == point


def test_a_tie_at_the_threshold_counts_as_disease(pointed_cascade):
    (tie,) = pointed_cascade.combine(_crafted(0.6, 0.9, [0, 1, 0], [1, 0, 0]), "balanced")
    assert tie.label == "alzheimer_mild"
    (above,) = pointed_cascade.combine(_crafted(np.nextafter(0.6, 1), 0.9, [0, 1, 0], [1, 0, 0]), "balanced")
    assert above.label == "healthy"
    assert list(calls_healthy(np.array([0.3, 0.3 + 1e-9]), np.array(["tumor", "tumor"]), POINTS["balanced"])) == [
        False, True]


def test_the_operating_point_changes_exactly_the_healthy_decision(pointed_cascade):
    rng = np.random.default_rng(0)
    n = 400
    p = {
        "disease-detector": np.stack([h := rng.uniform(0, 1, n), 1 - h], axis=1),
        "alzheimer-vs-tumor": np.stack([a := rng.uniform(0, 1, n), 1 - a], axis=1),
        "alzheimer-severity": rng.dirichlet([1, 1, 1], n),
        "tumor-type": rng.dirichlet([1, 1, 1], n),
    }
    balanced = pointed_cascade.combine(p, "balanced")
    screening = pointed_cascade.combine(p, "screening")
    changed = 0
    for b, s in zip(balanced, screening):
        assert b.probabilities == s.probabilities  # the joint distribution does not depend on the point
        if b.label != s.label:
            changed += 1
            assert b.label == "healthy" and s.label != "healthy"  # screening only ever takes back a healthy call
            assert [st.decision for st in s.stages][0] == "disease"
    assert changed > 0
    # the expected number: P(healthy) between the two thresholds of the scan's family
    family = np.where(p["alzheimer-vs-tumor"][:, 0] >= p["alzheimer-vs-tumor"][:, 1], "alzheimer", "tumor")
    low = np.array([POINTS["balanced"][f] for f in family])
    high = np.array([POINTS["screening"][f] for f in family])
    assert changed == int(((h > low) & (h <= high)).sum())


def test_the_default_operating_point_is_chosen_at_load_and_overridden_per_call(tmp_path):
    root = save_tiny_models(tmp_path, operating_points=POINTS)
    screening = Cascade.from_pretrained(root, operating_point="screening")
    assert screening.operating_point == "screening"
    assert Cascade.from_pretrained(root).operating_point == "balanced"
    image = synthetic_slice(4)
    assert screening.predict(image).operating_point == "screening"
    assert screening.predict(image, operating_point="balanced").operating_point == "balanced"
    assert screening.predict_series([image, synthetic_slice(5)], operating_point="balanced").operating_point == "balanced"
    assert screening.operating_point == "screening"  # a call never changes the cascade's own point
    with pytest.raises(ValueError, match="unknown operating point 'strict'"):
        screening.predict(image, operating_point="strict")
    with pytest.raises(ValueError, match="choose one of balanced, screening"):
        Cascade.from_pretrained(root, operating_point="fast")


def test_malformed_operating_points_stop_the_load_with_a_clear_error(tmp_path):
    root = save_tiny_models(tmp_path, operating_points={"balanced": {"alzheimer": 0.5}})
    with pytest.raises(ModelLoadError, match="operating_points must give a threshold"):
        Cascade.from_pretrained(root)


def test_a_series_is_answered_with_the_series_thresholds(tmp_path):
    """Slices always healthy (threshold 0), series never (threshold 1): the two must not share thresholds. Models
    without series thresholds answer a series with the slice ones."""
    always, never = ({point: dict.fromkeys(("alzheimer", "tumor"), t) for point in OPERATING_POINTS} for t in (0.0, 1.0))
    images = [synthetic_slice(6), synthetic_slice(7)]
    split = Cascade.from_pretrained(save_tiny_models(tmp_path / "split", operating_points=always,
                                                     series_operating_points=never))
    assert [result.label for result in split.predict_batch(images)] == ["healthy", "healthy"]
    assert split.predict_series(images).label != "healthy"
    assert split.thresholds("screening", series=True) == never["screening"]
    shared = Cascade.from_pretrained(save_tiny_models(tmp_path / "shared", operating_points=always))
    assert shared.predict_series(images).label == "healthy"


def test_malformed_series_thresholds_stop_the_load_with_a_clear_error(tmp_path):
    root = save_tiny_models(tmp_path, series_operating_points={"balanced": {"alzheimer": 2.0, "tumor": 0.5},
                                                               "screening": {"alzheimer": 0.5, "tumor": 0.5}})
    with pytest.raises(ModelLoadError, match="series_operating_points balanced thresholds .* are not probabilities"):
        Cascade.from_pretrained(root)


def test_result_serialises_to_the_api_json(tiny_cascade):
    payload = tiny_cascade.predict(jpeg_bytes(synthetic_slice(7))).to_dict()
    assert set(payload) >= {"label", "probabilities", "stages"}
    assert set(payload["stages"][0]) >= {"name", "probabilities", "decision"}


def test_model_locations_for_directories_and_hub_prefixes(tmp_path):
    assert model_location(tmp_path, "tumor-type") == str(tmp_path / "tumor-type")
    assert model_location("org/mri", "disease-detector") == "org/mri-disease-detector"


def test_a_model_with_the_wrong_classes_is_refused(tmp_path):
    root = save_tiny_models(tmp_path)
    (root / "tumor-type" / "config.json").write_text(
        (root / "alzheimer-severity" / "config.json").read_text()
    )
    with pytest.raises(ModelLoadError, match="tumor-type model at .* has classes"):
        Cascade.from_pretrained(root)


def test_bad_image_raises_a_clear_error(tiny_cascade):
    with pytest.raises(ImageLoadError):
        tiny_cascade.predict(b"not an image at all")


def test_a_missing_model_is_named_with_its_path(tmp_path):
    root = save_tiny_models(tmp_path)
    (root / "alzheimer-severity" / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match=f"alzheimer-severity model from {root / 'alzheimer-severity'}"):
        Cascade.from_pretrained(root)


def test_models_come_from_the_environment_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("MRI_CASCADE_MODELS", str(tmp_path))
    assert model_location(None, "tumor-type") == str(tmp_path / "tumor-type")


def test_test_time_flips_average_each_image_with_its_mirror_image(tmp_path):
    from PIL import ImageOps

    from mri_cascade.research.fitting import set_test_time_flips

    models = save_tiny_models(tmp_path / "models", seed=4)
    plain = Cascade.from_pretrained(models)
    set_test_time_flips(models, ["disease-detector"])
    flipping = Cascade.from_pretrained(models)
    assert [stage.test_time_flips for stage in flipping.stages.values()] == [True, False, False, False]

    image = synthetic_slice(5, lesion=True)  # the lesion sits off the midline: the mirror image differs
    mirror = ImageOps.mirror(image)
    (on_image, _), (on_mirror, _) = plain.run_models([image]), plain.run_models([mirror])
    flipped, embeddings = flipping.run_models([image])
    detector = "disease-detector"
    assert not np.allclose(on_image[detector], on_mirror[detector], atol=1e-4)  # so the test can tell
    assert flipped[detector] == pytest.approx((on_image[detector] + on_mirror[detector]) / 2, abs=1e-5)
    assert flipping.run_models([mirror])[0][detector] == pytest.approx(flipped[detector], abs=1e-5)
    # the other models and every embedding (the refusal check's input) are the image's own
    assert flipped["tumor-type"] == pytest.approx(on_image["tumor-type"], abs=1e-6)
    assert embeddings[detector] == pytest.approx(plain.run_models([image])[1][detector], abs=1e-6)
    with pytest.raises(ValueError, match="unknown task"):
        set_test_time_flips(models, ["detector"])


def test_a_hub_prefix_offline_says_which_variable_to_set():
    """Outside a checkout the default is the Hub prefix; offline, the error must say so and name the variable."""
    with pytest.raises(ModelLoadError, match=r"Hub prefix .*MRI_CASCADE_MODELS"):
        Cascade.from_pretrained("nobody-here/mri")


def test_without_the_hub_and_without_models_the_error_comes_at_once(monkeypatch):
    """Catches 26 s of retries (five per file, with backoff) before the message: with the Hub unreachable (here a
    loopback port nobody listens on, in online mode) one probe decides, and only cached copies are read."""
    import time

    from huggingface_hub import constants

    from mri_cascade import loading

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{free_port()}")
    loading.hub_reachable.cache_clear()
    try:
        started = time.monotonic()
        with pytest.raises(ModelLoadError, match=r"cannot be reached from here .*Hub prefix .*set MRI_CASCADE_MODELS"):
            Cascade.from_pretrained("nobody-here/mri")
        assert time.monotonic() - started < 2
    finally:
        loading.hub_reachable.cache_clear()


def test_an_installed_package_finds_the_checkouts_models_from_the_working_directory(tmp_path, monkeypatch):
    """A plain ``pip install .`` puts the package in site-packages, away from ``models/``: run from the checkout it
    still finds them; anywhere else there are none (and the Hub prefix is the default)."""
    from mri_cascade import loading
    from mri_cascade.labels import TASKS

    monkeypatch.setattr(loading, "__file__", str(tmp_path / "site-packages" / "mri_cascade" / "loading.py"))
    checkout = tmp_path / "checkout"
    for task in TASKS:
        (checkout / "models" / task).mkdir(parents=True)
        (checkout / "models" / task / "config.json").write_text("{}")
    monkeypatch.chdir(checkout)
    assert loading.checkout_models() == checkout / "models"
    monkeypatch.chdir(tmp_path)
    assert loading.checkout_models() is None
