import numpy as np
import pytest
from conftest import jpeg_bytes, save_tiny_models, synthetic_slice

from mri_cascade import LABEL_IDS, Cascade, ModelLoadError
from mri_cascade.cascade import model_location
from mri_cascade.images import ImageLoadError


def test_predict_returns_label_joint_probabilities_and_path(tiny_cascade):
    result = tiny_cascade.predict(synthetic_slice(0))
    assert result.label in LABEL_IDS
    assert list(result.probabilities) == list(LABEL_IDS)
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
    names = [stage.name for stage in result.stages]
    if result.label == "healthy":
        assert names == ["disease-detector"]
    else:
        expected_leaf = "alzheimer-severity" if result.label.startswith("alzheimer") else "tumor-type"
        assert names == ["disease-detector", "alzheimer-vs-tumor", expected_leaf]
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


def test_healthy_needs_p_healthy_above_the_stored_threshold(tmp_path):
    cascade = Cascade.from_pretrained(save_tiny_models(tmp_path, healthy_threshold=0.9))
    assert cascade.healthy_threshold == 0.9
    (below,) = cascade.combine(_crafted(0.85, 0.1, [1, 0, 0], [0.2, 0.3, 0.5]))
    assert below.label == "tumor_pituitary"  # 85 % healthy is not enough at a 0.9 threshold
    (above,) = cascade.combine(_crafted(0.95, 0.1, [1, 0, 0], [0.2, 0.3, 0.5]))
    assert above.label == "healthy" and [s.name for s in above.stages] == ["disease-detector"]


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
