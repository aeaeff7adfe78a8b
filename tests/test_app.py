"""The Space launched in-process on a loopback port with tiny models, called through gradio_client."""

import pytest
from conftest import jpeg_bytes, synthetic_slice
from gradio_client import Client, handle_file

from mri_cascade import LABEL_IDS


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


def test_classify_returns_the_design_json(client, tmp_path):
    scan = tmp_path / "scan.jpg"
    scan.write_bytes(jpeg_bytes(synthetic_slice(0)))
    result = client.predict(handle_file(str(scan)), api_name="/classify")
    assert result["label"] in LABEL_IDS
    assert set(result["probabilities"]) == set(LABEL_IDS)
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
    names = [stage["name"] for stage in result["stages"]]
    assert names[0] == "disease-detector"
    if result["label"] == "healthy":
        assert names == ["disease-detector"]
    else:
        leaf = "alzheimer-severity" if result["label"].startswith("alzheimer") else "tumor-type"
        assert names == ["disease-detector", "alzheimer-vs-tumor", leaf]


def test_the_ui_endpoint_answers_in_words_and_bars(client, tmp_path):
    scan = tmp_path / "scan.png"
    synthetic_slice(1).save(scan)
    answer, path, joint, *stages = client.predict(handle_file(str(scan)), api_name="/show")
    assert answer.startswith("## ") and "%" in answer
    assert path.startswith("Disease detector:")
    assert len(joint["confidences"]) == 7


@pytest.mark.parametrize(
    "name, payload, message",
    [
        ("empty.jpg", b"", "empty"),
        ("notes.jpg", b"patient notes, not a picture\n" * 20, "not a readable image"),
        ("cut.jpg", jpeg_bytes(synthetic_slice(2))[:500], "damaged or truncated"),
    ],
    ids=["empty", "text", "truncated"],
)
def test_bad_input_gets_a_clear_error_and_the_app_keeps_serving(client, tmp_path, name, payload, message):
    bad = tmp_path / name
    bad.write_bytes(payload)
    with pytest.raises(Exception, match=message):
        client.predict(handle_file(str(bad)), api_name="/classify")
    good = tmp_path / "good.jpg"
    good.write_bytes(jpeg_bytes(synthetic_slice(3)))
    assert client.predict(handle_file(str(good)), api_name="/classify")["label"] in LABEL_IDS
