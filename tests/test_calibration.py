"""Temperature scaling: fitted from validation logits, stored in the config, applied by the cascade."""

import json

import numpy as np
import pytest
from conftest import save_tiny_models, synthetic_slice

from mri_cascade import Cascade
from mri_cascade.calibration import softmax
from mri_cascade.research.calibration_fit import expected_calibration_error, fit_temperature


def test_fit_temperature_recovers_the_temperature_that_generated_the_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (5000, 3))
    labels = np.array([rng.choice(3, p=p) for p in softmax(logits, 2.5)])
    assert fit_temperature(logits, labels) == pytest.approx(2.5, rel=0.1)


def test_ece_is_small_when_calibrated_and_large_when_overconfident():
    rng = np.random.default_rng(1)
    confidence = rng.uniform(0.3, 1.0, 20000)
    calibrated = rng.uniform(size=confidence.size) < confidence
    assert expected_calibration_error(confidence, calibrated) < 0.02
    assert expected_calibration_error(np.full(1000, 0.99), np.arange(1000) < 700) == pytest.approx(0.29)


TEMPERATURES = {"disease-detector": 0.25, "alzheimer-vs-tumor": 4.0, "alzheimer-severity": 0.5, "tumor-type": 2.0}


@pytest.fixture(scope="module")
def scaled_models(tmp_path_factory):
    """The tiny models with a different temperature stored in each model's config."""
    root = save_tiny_models(tmp_path_factory.mktemp("scaled"))
    for task, temperature in TEMPERATURES.items():
        config_path = root / task / "config.json"
        config = json.loads(config_path.read_text())
        config["calibration_temperature"] = temperature
        config_path.write_text(json.dumps(config))
    return root


def test_each_model_gets_its_own_stored_temperature(scaled_models):
    images = [synthetic_slice(i, lesion=i % 2 == 0) for i in range(6)]
    cascade = Cascade.from_pretrained(scaled_models)
    logits = cascade.stage_logits(images)
    scaled = cascade.stage_probabilities(images)
    for task, temperature in TEMPERATURES.items():
        assert cascade.stages[task].config.calibration_temperature == temperature
        np.testing.assert_allclose(scaled[task], softmax(logits[task], temperature), rtol=1e-6)
        assert not np.allclose(scaled[task], softmax(logits[task], 1.0))
        np.testing.assert_array_equal(scaled[task].argmax(axis=1), logits[task].argmax(axis=1))


def test_predict_and_predict_series_use_the_temperatures(scaled_models):
    cascade = Cascade.from_pretrained(scaled_models)
    images = [synthetic_slice(20), synthetic_slice(21, lesion=True)]
    scaled = cascade.stage_probabilities(images)
    expected = cascade.combine(scaled)
    for image, want in zip(images, expected):
        assert cascade.predict(image).probabilities == pytest.approx(want.probabilities, abs=1e-6)
    pooled = {task: p.mean(axis=0, keepdims=True) for task, p in scaled.items()}
    (want,) = cascade.combine(pooled)
    assert cascade.predict_series(images).probabilities == pytest.approx(want.probabilities, abs=1e-6)
    plain = Cascade.from_pretrained(save_tiny_models(scaled_models.parent / "plain"))
    assert plain.predict_series(images).probabilities != pytest.approx(want.probabilities, abs=1e-6)
