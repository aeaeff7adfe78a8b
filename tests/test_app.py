"""The Space launched in-process on a loopback port with tiny models, called through gradio_client."""

import pytest
from conftest import jpeg_bytes, synthetic_slice
from gradio_client import Client, handle_file
from PIL import Image

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


def test_the_ui_endpoint_answers_in_words_and_bars_and_the_heatmap_follows(client, tmp_path):
    from mri_cascade.service import HEATMAP_PENDING

    scan = tmp_path / "scan.png"
    synthetic_slice(1).save(scan)
    answer, path, heatmap, caption, joint, *stages = client.predict(handle_file(str(scan)), api_name="/show")
    assert answer.startswith("## ") and "%" in answer
    assert path["visible"] is True and path["value"].startswith("Disease detector:")
    assert joint["visible"] is True and len(joint["value"]["confidences"]) == 7
    assert heatmap["visible"] is True and heatmap["value"] is None and caption["value"] == HEATMAP_PENDING
    overlay_file, caption = client.predict(api_name="/show_heatmap")  # the answer just given, from this session
    with Image.open(overlay_file) as overlay:  # the answer's heatmap over the scan, at the scan's size
        assert overlay.size == synthetic_slice(1).size and overlay.mode == "RGB"
    assert caption.startswith("Occlusion map: bright where painting over the slice")


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


@pytest.mark.parametrize("name", ["notes.jpg", "scan.dcm"], ids=["text-renamed-jpg", "dicom"])
def test_the_one_slice_box_hands_the_upload_to_our_loader(client, tmp_path, capfd, caplog, name):
    """Catches the One slice tab's image box decoding the upload with PIL before our function runs: a text file
    renamed .jpg got red "Error" badges with no message while the server log printed Gradio's
    ComponentProcessingError with the upload's path, and a DICOM slice could not be read there at all."""
    import numpy as np
    from conftest import dicom_bytes

    upload = tmp_path / name
    if name.endswith(".dcm"):
        upload.write_bytes(dicom_bytes(np.asarray(synthetic_slice(6), dtype=np.uint16) * 16))
        answer, *_ = client.predict(handle_file(str(upload)), api_name="/show")
        assert answer.startswith("## ")
    else:
        upload.write_bytes(b"patient notes, not a picture\n" * 20)
        with pytest.raises(Exception, match=r"'notes\.jpg' is not a readable image"):
            client.predict(handle_file(str(upload)), api_name="/show")
    logged = capfd.readouterr()
    assert name not in logged.err + logged.out and "Traceback" not in logged.err
    assert name not in caplog.text and str(tmp_path) not in caplog.text


def test_classify_series_takes_dicom_and_nifti_files(client, tmp_path):
    import numpy as np
    from conftest import PATIENT_ID, dicom_bytes, nifti_bytes

    frames = np.stack([np.asarray(synthetic_slice(i), dtype=np.uint16) * 16 for i in range(2)])
    (tmp_path / "series.dcm").write_bytes(dicom_bytes(frames))
    volume = np.stack([np.asarray(synthetic_slice(k, size=(48, 56)), dtype=float) for k in range(3)], axis=2)
    (tmp_path / "volume.nii.gz").write_bytes(nifti_bytes(volume, gzipped=True))
    result = client.predict([handle_file(str(tmp_path / "series.dcm")), handle_file(str(tmp_path / "volume.nii.gz"))],
                            api_name="/classify_series")
    assert result["label"] in LABEL_IDS and sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-6)
    assert [s["index"] for s in result["slices"]] == [0, 1, 2, 3, 4]
    assert "Doe" not in str(result) and PATIENT_ID not in str(result)


def test_classify_takes_a_single_frame_dicom_and_points_volumes_to_the_series_endpoint(client, tmp_path):
    import numpy as np
    from conftest import dicom_bytes

    (tmp_path / "one.dcm").write_bytes(dicom_bytes(np.asarray(synthetic_slice(4), dtype=np.uint16) * 16))
    assert client.predict(handle_file(str(tmp_path / "one.dcm")), api_name="/classify")["label"] in LABEL_IDS
    frames = np.stack([np.asarray(synthetic_slice(i), dtype=np.uint16) for i in range(3)])
    (tmp_path / "three.dcm").write_bytes(dicom_bytes(frames))
    with pytest.raises(Exception, match="holds 3 slices"):
        client.predict(handle_file(str(tmp_path / "three.dcm")), api_name="/classify")


def test_classify_takes_an_optional_operating_point_and_says_which_it_used(client, tmp_path):
    scan = tmp_path / "scan.jpg"
    scan.write_bytes(jpeg_bytes(synthetic_slice(8)))
    default = client.predict(handle_file(str(scan)), api_name="/classify")  # one-argument calls keep working
    screening = client.predict(handle_file(str(scan)), "screening", api_name="/classify")
    assert default["operating_point"] == "balanced" and screening["operating_point"] == "screening"
    series = client.predict([handle_file(str(scan))], "screening", api_name="/classify_series")
    assert series["operating_point"] == "screening"
    with pytest.raises(Exception, match=r"unknown operating point 'strict'; choose one of balanced, screening"):
        client.predict(handle_file(str(scan)), "strict", api_name="/classify")


def test_the_page_answer_names_its_operating_point(client, tmp_path):
    scan = tmp_path / "scan.png"
    synthetic_slice(9).save(scan)
    answer, *_ = client.predict(handle_file(str(scan)), "screening", api_name="/show")
    assert "operating point: Screening" in answer


def test_the_space_offers_the_eight_committed_example_scans_with_their_true_answers(monkeypatch):
    from mri_cascade.labels import LABELS
    from mri_cascade.service import EXAMPLES_ENV, example_scans

    monkeypatch.delenv(EXAMPLES_ENV, raising=False)
    examples = example_scans()
    assert len(examples) == 8
    captions = [caption for _, caption in examples]
    assert {caption.split(" (true answer")[0] for caption in captions} == set(LABELS.values())
    for path, _ in examples:
        with Image.open(path) as image:
            assert min(image.size) >= 32


def test_another_examples_folder_overrides_the_committed_one(monkeypatch, tmp_path):
    from mri_cascade.service import EXAMPLES_ENV, example_scans

    synthetic_slice(1).save(tmp_path / "alzheimer-MildDemented.png")
    synthetic_slice(2).save(tmp_path / "mine.png")
    monkeypatch.setenv(EXAMPLES_ENV, str(tmp_path))
    assert [caption for _, caption in example_scans()] == [
        "Mild Alzheimer's (true answer, alzheimer test scan)", "mine"]


def test_a_refusal_hides_the_heatmap_and_bars_and_says_what_to_upload(guarded_cascade):
    from app import panel_values
    from mri_cascade.research.probes import non_mri_images
    from mri_cascade.service import REFUSAL_ADVICE, classify

    letter = next(image for kind, image in non_mri_images() if kind == "document")
    answer, path, heatmap, caption, joint, *stages = panel_values(classify(guarded_cascade, letter), series=False)
    assert answer.startswith("## No answer") and REFUSAL_ADVICE in answer
    assert path["visible"] is False and heatmap["visible"] is False and joint["visible"] is False
    assert caption["visible"] is False and all(stage["visible"] is False for stage in stages)
    answered = panel_values(classify(guarded_cascade, synthetic_slice(3001)), series=False)
    assert all(answered[index]["visible"] is True for index in (2, 3, 4))


def test_the_page_tells_users_to_upload_the_series_for_alzheimers(app_url):
    """The page's own text, as the browser receives it, says what to upload for which question."""
    import json
    import urllib.request

    from mri_cascade.service import WHAT_TO_UPLOAD

    with urllib.request.urlopen(f"{app_url}/config") as response:
        config = json.loads(response.read())
    texts = [c.get("props", {}).get("value") for c in config["components"] if c.get("type") == "markdown"]
    assert WHAT_TO_UPLOAD in texts and "series" in WHAT_TO_UPLOAD and "Alzheimer" in WHAT_TO_UPLOAD


@pytest.mark.parametrize("case", ["healthy on top, disease called", "disease on top, healthy called",
                                  "other branch on top"])
def test_an_answer_that_is_not_the_top_bar_says_why_in_one_line(tiny_cascade, case):
    """Catches the page answering Glioma under a highest bar of 'No disease found' without a word of why."""
    import numpy as np

    from mri_cascade.service import describe

    p_healthy, p_alzheimer, p_glioma, threshold = {"healthy on top, disease called": (0.39, 0.2, 0.5, 0.46),
                                                   "disease on top, healthy called": (0.35, 0.2, 0.9, 0.30),
                                                   "other branch on top": (0.05, 0.55, 0.9, 0.46)}[case]
    probabilities = {"disease-detector": np.array([[p_healthy, 1 - p_healthy]]),
                     "alzheimer-vs-tumor": np.array([[p_alzheimer, 1 - p_alzheimer]]),
                     "alzheimer-severity": np.array([[0.4, 0.3, 0.3]]),
                     "tumor-type": np.array([[p_glioma, (1 - p_glioma) / 2, (1 - p_glioma) / 2]])}
    (result,) = tiny_cascade.combine(probabilities, thresholds={"alzheimer": threshold, "tumor": threshold})
    answer = describe(result).answer
    lines = [line for line in answer.split("\n\n") if "highest bar" in line or "needs P(healthy)" in line]
    assert len(lines) == 1, answer
    if case == "other branch on top":
        assert result.label == "alzheimer_very_mild"
        assert lines[0].startswith("Stage 2 finds it more like Alzheimer's disease than a tumor (P 0.55)")
        assert "'Glioma' has the highest bar" in lines[0]
    else:
        assert lines[0].startswith(f"At the balanced point, 'No disease found' needs P(healthy) > {threshold:.2f}; "
                                   f"here it is {p_healthy:.2f}")
    agreeing = probabilities | {"disease-detector": np.array([[0.9, 0.1]])}
    assert "highest bar" not in describe(tiny_cascade.combine(agreeing, thresholds={"alzheimer": 0.5, "tumor": 0.5})[0]).answer


def test_the_operating_point_help_is_body_text_not_a_faint_hint(app_url):
    """Catches the help under 'Operating point' set as the Radio's info, which Gradio renders small and faint."""
    import json
    import urllib.request

    from mri_cascade.service import OPERATING_POINT_HELP

    with urllib.request.urlopen(f"{app_url}/config") as response:
        components = json.loads(response.read())["components"]
    radio = next(c for c in components if c.get("props", {}).get("elem_id") == "operating-point")
    assert not radio["props"].get("info")
    help_text = next(c for c in components if c.get("props", {}).get("elem_id") == "operating-point-help")
    assert help_text["type"] == "markdown" and help_text["props"]["value"] == OPERATING_POINT_HELP


def test_a_series_tells_its_progress(tiny_cascade, monkeypatch):
    """Catches minutes of silence on a long series: reading, classifying and each batch of heatmaps is told, from 0
    to near 1, and the page's series handlers take a gr.Progress."""
    import inspect

    import gradio as gr

    import app
    from mri_cascade import service

    told = []
    monkeypatch.setattr(service, "HEATMAP_BATCH", 2)
    service.classify_series(tiny_cascade, [synthetic_slice(seed) for seed in range(5)],
                            progress=lambda fraction, what: told.append((fraction, what)))
    fractions = [fraction for fraction, _ in told]
    assert fractions == sorted(fractions) and fractions[0] == 0 and 0.5 < fractions[-1] < 1
    assert [what for _, what in told][:2] == ["reading 5 files", "classifying 5 slices"]
    assert "heatmaps: slice 5 of 5" in [what for _, what in told]
    demo = app.build_demo(tiny_cascade)
    handlers = {fn.name: fn.fn for fn in demo.fns.values()}
    for name in ("show_series", "reshow_series", "draw_series"):
        defaults = [p.default for p in inspect.signature(handlers[name]).parameters.values()]
        assert any(isinstance(default, gr.Progress) for default in defaults)
