"""DICOM and NIfTI inputs, 16-bit and RGBA pictures, series pooling, and patient data never leaking."""

import json
import logging

import numpy as np
import pytest
from conftest import PATIENT_ID, PATIENT_NAME, dicom_bytes, nifti_bytes, synthetic_slice
from PIL import Image

from mri_cascade import ImageLoadError, load_image, load_series
from mri_cascade.decisions import pool_series


def brain_12bit(seed: int = 0) -> np.ndarray:
    return (np.asarray(synthetic_slice(seed), dtype=np.uint16) * 16).astype(np.uint16)  # 0..4080


def grey(image: Image.Image) -> np.ndarray:
    return np.asarray(image)[..., 0].astype(int)


def full_range_slice(seed: int = 0) -> np.ndarray:
    """A synthetic 8-bit slice stretched to span 0-255, as exported MRI slices do."""
    pixels = np.asarray(synthetic_slice(seed), dtype=float)
    return np.round(pixels / pixels.max() * 255).astype(np.uint16)


@pytest.mark.parametrize("rendering", ["8-bit", "12-bit", "MONOCHROME1", "rescaled"])
def test_a_picture_wrapped_as_dicom_without_window_tags_gets_its_pixels_and_its_answer_back(tiny_cascade, rendering):
    """Catches the percentile window (0.5-99.5 %, slice by slice) that reshaped contrast: the same pixels as DICOM
    were not the picture they came from, and could be answered otherwise."""
    pixels = full_range_slice()
    stored, options = {"8-bit": (pixels, {"bits_stored": 8}),
                       "12-bit": (pixels * 16, {}),
                       "MONOCHROME1": (4095 - pixels * 16, {"photometric": "MONOCHROME1"}),
                       "rescaled": (pixels * 16, {"rescale": (0.5, -1000.0)})}[rendering]
    dicom = load_image(dicom_bytes(stored, **options))
    assert np.array_equal(grey(dicom), pixels)
    picture = Image.fromarray(pixels.astype(np.uint8), mode="L")
    assert tiny_cascade.predict(dicom).probabilities == tiny_cascade.predict(picture).probabilities


def test_the_dicom_files_of_a_series_share_one_window(tmp_path):
    """Catches a series' DICOM files windowed one by one: a slice half as bright as its neighbour came out as
    bright, and a patient's slices lost their contrast relative to one another."""
    from mri_cascade.images import load_slices, read_sources

    bright, dim = brain_12bit(1), brain_12bit(2) // 2
    (tmp_path / "1.dcm").write_bytes(dicom_bytes(bright))
    (tmp_path / "2.dcm").write_bytes(dicom_bytes(dim))
    separate = [grey(image) for image in load_slices([tmp_path / "1.dcm", tmp_path / "2.dcm"])]
    assert separate[0].max() == 255 and abs(separate[1].max() - 128) <= 1
    multi_frame = [grey(image) for image in load_series(dicom_bytes(np.stack([bright, dim])))]
    assert all(np.array_equal(a, b) for a, b in zip(separate, multi_frame))
    problems = []  # the batch engine's reading: an unreadable member is a problem, the others still share the window
    (tmp_path / "3.dcm").write_bytes(b"broken")
    tolerant = read_sources([tmp_path / "1.dcm", tmp_path / "3.dcm", tmp_path / "2.dcm"], problems)
    assert [grey(image).max() for image in tolerant] == [255, separate[1].max()] and "'3.dcm'" in problems[0]


def test_a_nifti_volume_spanning_0_to_255_gets_its_pixels_back():
    """Catches the percentile window reshaping a volume's contrast (its brightest 0.5 % clipped)."""
    pixels = full_range_slice(3)
    volume = np.stack([np.rot90(pixels, k=-1), np.rot90(pixels // 2, k=-1)], axis=2).astype(float)
    first, second = (grey(image) for image in load_series(nifti_bytes(volume)))
    assert np.array_equal(first, pixels) and np.array_equal(second, pixels // 2)


def test_monochrome1_is_inverted():
    pixels = brain_12bit()
    normal = grey(load_image(dicom_bytes(pixels, window=(2048, 4096))))
    inverted = grey(load_image(dicom_bytes(4095 - pixels, photometric="MONOCHROME1", window=(2047, 4096))))
    assert np.abs(normal - inverted).max() <= 1


def test_window_centre_and_width_are_applied_after_rescale():
    pixels = np.tile(np.arange(0, 4000, 4000 / 64, dtype=np.uint16), (64, 1))
    image = grey(load_image(dicom_bytes(pixels, window=(1000, 1000), rescale=(2.0, -1000.0))))
    rescaled = pixels * 2.0 - 1000.0
    assert (image[rescaled <= 500] == 0).all() and (image[rescaled >= 1500] == 255).all()
    middle = (rescaled > 600) & (rescaled < 1400)
    assert np.all(np.diff(image[0][middle[0]]) >= 0)


def test_multi_frame_dicom_is_a_series():
    frames = np.stack([brain_12bit(i) for i in range(3)])
    assert len(load_series(dicom_bytes(frames))) == 3
    with pytest.raises(ImageLoadError, match="holds 3 slices"):
        load_image(dicom_bytes(frames))


def test_dicom_without_pixel_data_is_refused_clearly(tmp_path):
    path = tmp_path / "report.dcm"
    path.write_bytes(dicom_bytes(brain_12bit(), with_pixels=False))
    with pytest.raises(ImageLoadError, match="'report.dcm' is a DICOM file without pixel data"):
        load_image(path)


def test_truncated_dicom_is_refused_clearly():
    with pytest.raises(ImageLoadError, match="DICOM"):
        load_image(dicom_bytes(brain_12bit())[:600])


def test_nifti_volume_gives_axial_slices_skipping_empty_ones():
    volume = np.zeros((64, 80, 10))
    for k in range(2, 8):
        volume[:, :, k] = np.rot90(np.asarray(synthetic_slice(k, size=(64, 80)), dtype=float), k=-1)
    volume[30:34, 70:78, 2:8] = 400  # a bright marker at the anterior (high y) edge
    slices = load_series(nifti_bytes(volume))
    assert len(slices) == 6
    top_rows = grey(slices[0])[:12]
    assert top_rows.max() == 255  # anterior is at the top
    assert len(load_series(nifti_bytes(volume, gzipped=True))) == 6


def test_a_two_d_nifti_and_a_singleton_fourth_axis_are_accepted():
    plane = np.asarray(synthetic_slice(1, size=(40, 48)), dtype=float)
    assert len(load_series(nifti_bytes(plane))) == 1
    assert len(load_series(nifti_bytes(np.stack([plane] * 3, axis=2)[..., None]))) == 3


def test_four_d_nifti_is_refused_clearly(tmp_path):
    path = tmp_path / "fmri.nii"
    path.write_bytes(nifti_bytes(np.random.default_rng(0).random((16, 16, 4, 5))))
    with pytest.raises(ImageLoadError, match="'fmri.nii' is a 4-D NIfTI image"):
        load_series(path)


def test_sixteen_bit_png_and_rgba_pictures(tmp_path):
    deep = (np.asarray(synthetic_slice(2), dtype=np.uint16) * 257).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(deep).save(path)
    assert np.corrcoef(grey(load_image(path)).ravel(), deep.ravel())[0, 1] > 0.99
    rgba = synthetic_slice(3).convert("RGBA")
    rgba.putalpha(Image.fromarray(np.where(np.asarray(synthetic_slice(3)) > 0, 255, 0).astype(np.uint8)))
    assert grey(load_image(rgba)).shape == (208, 176)


def test_pooling_is_the_mean_of_the_slices_probabilities():
    probabilities = {"tumor-type": np.array([[0.6, 0.3, 0.1], [0.2, 0.6, 0.2], [0.5, 0.4, 0.1]])}
    np.testing.assert_allclose(pool_series(probabilities)["tumor-type"][0], [1.3 / 3, 1.3 / 3, 0.4 / 3])
    same = pool_series({"tumor-type": np.array([[0.7, 0.2, 0.1]] * 4)})["tumor-type"][0]
    np.testing.assert_allclose(same, [0.7, 0.2, 0.1])


def test_one_odd_slice_cannot_outvote_the_rest():
    # nine slices at 0.9 glioma and one at ~0 for glioma: a geometric mean pooled this to meningioma
    slices = np.array([[0.9, 0.05, 0.05]] * 9 + [[1e-9, 0.9, 0.1 - 1e-9]])
    pooled = pool_series({"tumor-type": slices})["tumor-type"][0]
    assert pooled.argmax() == 0 and pooled[0] == pytest.approx(0.81)


def test_series_prediction_answers_for_the_patient_and_every_slice(tiny_cascade):
    frames = np.stack([brain_12bit(i) for i in range(4)])
    series = tiny_cascade.predict_series([dicom_bytes(frames), synthetic_slice(9)])
    assert len(series.slices) == 5
    assert sum(series.probabilities.values()) == pytest.approx(1.0)
    single = tiny_cascade.predict_series([synthetic_slice(9)])
    assert single.probabilities == pytest.approx(tiny_cascade.predict(synthetic_slice(9)).probabilities, abs=1e-6)


def test_patient_fields_never_reach_results_errors_or_logs(tiny_cascade, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    data = dicom_bytes(np.stack([brain_12bit(i) for i in range(2)]))
    assert PATIENT_NAME.encode() in data  # the file does carry them
    outputs = [json.dumps(tiny_cascade.predict_series(data).to_dict())]
    for broken in (data[:700], dicom_bytes(brain_12bit(), with_pixels=False)):
        with pytest.raises(ImageLoadError) as error:
            load_image(broken)
        outputs.append(str(error.value))
    captured = capsys.readouterr()
    outputs += [caplog.text, captured.out, captured.err]
    for text in outputs:
        assert "Doe" not in text and "Jane" not in text and PATIENT_ID not in text


def test_a_sigmoid_window_function_is_applied_as_the_header_says():
    """The header's VOI LUT function counts (pydicom's apply_voi_lut), not only its centre and width: at the upper
    edge of a sigmoid window a pixel is still short of white, where a linear window saturates it."""
    import io

    import pydicom

    pixels = np.tile(np.arange(0, 4000, 4000 / 64, dtype=np.uint16), (64, 1))
    linear = dicom_bytes(pixels, window=(2000, 1000))
    dataset = pydicom.dcmread(io.BytesIO(linear))
    dataset.VOILUTFunction = "SIGMOID"
    stream = io.BytesIO()
    dataset.save_as(stream)
    column = int(np.argmin(np.abs(pixels[0].astype(float) - 2600)))  # just past centre + width / 2
    assert grey(load_image(linear))[0, column] == 255
    assert 200 < grey(load_image(stream.getvalue()))[0, column] < 250
