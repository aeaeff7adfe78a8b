import numpy as np
import pytest
from conftest import jpeg_bytes, synthetic_slice
from PIL import Image

from mri_cascade.images import ImageLoadError, load_image


def test_path_bytes_pil_and_array_give_the_same_rgb_image(tmp_path):
    image = synthetic_slice(1)
    path = tmp_path / "scan.png"
    image.save(path)
    loaded = [load_image(path), load_image(str(path)), load_image(path.read_bytes()), load_image(image),
              load_image(np.asarray(image))]
    for candidate in loaded:
        assert candidate.mode == "RGB" and candidate.size == image.size
        assert np.array_equal(np.asarray(candidate), np.asarray(loaded[0]))


def test_colour_is_dropped_and_channels_are_equal():
    rgb = Image.merge("RGB", [synthetic_slice(2), synthetic_slice(3), synthetic_slice(4)])
    array = np.asarray(load_image(rgb))
    assert np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 1], array[..., 2])


def test_sixteen_bit_and_float_arrays_are_rescaled():
    ramp = np.linspace(0, 4095, 64 * 64).reshape(64, 64).astype(np.uint16)
    loaded = np.asarray(load_image(Image.fromarray(ramp)))[..., 0]
    assert loaded.min() == 0 and loaded.max() == 255
    assert np.asarray(load_image(ramp.astype(np.float32) / 4095))[..., 0].max() == 255


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"", "empty"),
        (b"this is text, not an image" * 10, "not a readable image"),
        (jpeg_bytes(synthetic_slice(5))[:400], "damaged or truncated"),
    ],
    ids=["empty", "text", "truncated"],
)
def test_bad_bytes_get_a_clear_error(payload, message):
    with pytest.raises(ImageLoadError, match=message):
        load_image(payload)


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(ImageLoadError, match="'nothing.jpg' is not a file"):
        load_image(tmp_path / "nothing.jpg")
