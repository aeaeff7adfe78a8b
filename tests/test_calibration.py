"""Temperature scaling: fitted from validation logits, stored in the config, applied by the cascade."""

import json

import numpy as np
import pytest
from conftest import save_tiny_models, synthetic_slice

from mri_cascade import Cascade
from mri_cascade.calibration import expected_calibration_error, fit_temperature, softmax
from mri_cascade.labels import TASKS


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


def test_a_stored_temperature_round_trips_and_changes_probabilities_not_argmax(tmp_path):
    root = save_tiny_models(tmp_path)
    images = [synthetic_slice(i, lesion=i % 2 == 0) for i in range(6)]
    plain = Cascade.from_pretrained(root).stage_probabilities(images)
    for task in TASKS:
        config_path = root / task / "config.json"
        config = json.loads(config_path.read_text())
        config["calibration_temperature"] = 0.25
        config_path.write_text(json.dumps(config))
    scaled_cascade = Cascade.from_pretrained(root)
    assert scaled_cascade.stages["tumor-type"].config.calibration_temperature == 0.25
    scaled = scaled_cascade.stage_probabilities(images)
    for task in TASKS:
        assert not np.allclose(scaled[task], plain[task])
        np.testing.assert_array_equal(scaled[task].argmax(axis=1), plain[task].argmax(axis=1))
        assert (scaled[task].max(axis=1) >= plain[task].max(axis=1) - 1e-9).all()  # T < 1 sharpens
