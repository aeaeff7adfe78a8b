"""Cropping to the head: every source's scans framed alike, for models whose config asks for it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import save_tiny_models
from PIL import Image

from mri_cascade import Cascade
from mri_cascade.images import HEAD_MARGIN, crop_to_head, head_box
from mri_cascade.loading import CROP_TO_HEAD_KEY
from mri_cascade.results import StageResult


def small_head_in_a_wide_frame() -> Image.Image:
    """A 300x200 frame: a bright 'head' (60 wide, 80 tall, centred at x=100, y=90), a 3x3 burnt-in mark in the
    bottom-right corner and faint background noise."""
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 8, size=(200, 300))
    y, x = np.mgrid[0:200, 0:300]
    pixels[((x - 100) / 30) ** 2 + ((y - 90) / 40) ** 2 < 1] = 160
    pixels[190:193, 290:293] = 255
    return Image.fromarray(pixels.astype(np.uint8), mode="L").convert("RGB")


def test_the_box_is_a_square_around_the_head_with_a_margin_and_leaves_out_small_marks():
    left, top, right, bottom = head_box(small_head_in_a_wide_frame())
    assert right - left == bottom - top  # square, so resizing keeps the head's shape
    side = 80 * (1 + 2 * HEAD_MARGIN)  # the head's longer side plus the margin on both ends
    assert right - left == pytest.approx(side, abs=2)
    assert (left + right) / 2 == pytest.approx(100, abs=1.5) and (top + bottom) / 2 == pytest.approx(90, abs=1.5)
    assert right < 290 and bottom < 190  # the corner mark is not part of the head


def test_a_crop_fills_the_frame_with_the_head_and_pads_past_the_edges_with_black():
    picture = Image.new("L", (120, 120))
    picture.paste(200, (0, 30, 40, 90))  # a head touching the left edge: its square box reaches past it
    cropped = np.asarray(crop_to_head(picture.convert("RGB")).convert("L"))
    assert cropped.shape[0] == cropped.shape[1] == pytest.approx(60 * (1 + 2 * HEAD_MARGIN), abs=2)
    assert cropped[:, :5].max() == 0 and cropped[cropped.shape[0] // 2, cropped.shape[1] // 2] == 200


@pytest.mark.parametrize("picture", [Image.new("RGB", (64, 64)), Image.new("RGB", (64, 64), (90, 90, 90))])
def test_a_slice_without_a_head_standing_out_is_left_as_it_is(picture):
    assert head_box(picture) is None
    assert crop_to_head(picture) is picture


@pytest.fixture(scope="module")
def cropping_cascade(tmp_path_factory):
    """Tiny models where only tumor type reads the head's crop."""
    root = save_tiny_models(tmp_path_factory.mktemp("cropping-models"))
    config_file = root / "tumor-type" / "config.json"
    config = json.loads(config_file.read_text())
    config[CROP_TO_HEAD_KEY] = True
    config_file.write_text(json.dumps(config))
    return Cascade.from_pretrained(root)


def test_only_a_model_whose_config_asks_reads_the_crop(cropping_cascade):
    scan = small_head_in_a_wide_frame()
    tumor_type, detector = cropping_cascade.stages["tumor-type"], cropping_cascade.stages["disease-detector"]
    np.testing.assert_allclose(tumor_type.preprocess([scan]), detector.preprocess([crop_to_head(scan)]))
    assert not np.allclose(detector.preprocess([scan]), tumor_type.preprocess([scan]))
    # the same image processor, but not the same input: the cropping model gets a preprocessing pass of its own
    assert ["tumor-type"] in cropping_cascade.preprocessing_groups.values()
    logits = cropping_cascade.stage_logits([scan])["tumor-type"]
    expected = tumor_type.run(tumor_type.preprocess([scan]))[0][:, cropping_cascade.class_columns["tumor-type"]]
    np.testing.assert_allclose(logits, expected, atol=1e-5)


def test_the_heatmap_of_a_cropping_model_lies_over_the_head(cropping_cascade):
    scan = small_head_in_a_wide_frame()
    result = cropping_cascade.predict(scan, refuse_unfamiliar=False)
    result.stages[-1] = StageResult("tumor-type", "", {}, "glioma")  # explain tumor type's decision
    heatmap = cropping_cascade.explain(scan, result).heatmap
    left, top, right, bottom = head_box(scan)
    assert heatmap.shape == (200, 300) and heatmap.max() == pytest.approx(1.0)
    outside = heatmap.copy()
    outside[max(top, 0) : bottom, max(left, 0) : right] = 0
    assert outside.max() == 0  # nothing outside the box the model saw


def test_the_card_of_a_cropping_model_tells_pipeline_users_to_crop(cropping_cascade):
    from pathlib import Path

    from mri_cascade.research.cards import render_model_card

    location = Path(cropping_cascade.stages["tumor-type"].location)
    cropping = render_model_card(location).text
    plain = render_model_card(Path(cropping_cascade.stages["disease-detector"].location)).text
    assert "classifier(crop_to_head(load_image(" in cropping and "crop_to_head" not in plain
