"""Everything a public Space receives: each bad input gets a clear message, odd encodings still get answers."""

import re

import pytest
from conftest import bad_input_corpus, odd_but_valid_corpus, synthetic_slice
from gradio_client import Client, handle_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mri_cascade import ImageLoadError, load_image, load_series
from mri_cascade.labels import LABEL_IDS

BAD = bad_input_corpus()
ODD = odd_but_valid_corpus()


@pytest.mark.parametrize("name, content, message", BAD, ids=[item[0] for item in BAD])
def test_library_refuses_bad_input_with_a_specific_message(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageLoadError, match=re.escape(message)) as error:
        load_series(path)
    assert f"'{name}'" in str(error.value) and "Traceback" not in str(error.value)


@pytest.mark.parametrize("name, content", ODD, ids=[item[0] for item in ODD])
def test_library_answers_odd_but_valid_encodings(tiny_cascade, tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    assert tiny_cascade.predict(path).label in LABEL_IDS


def test_exif_rotation_is_applied():
    content = dict(ODD)["rotated.jpg"]
    assert load_image(content).size == (208, 176)  # stored 176x208, displayed turned on its side


def test_files_over_the_size_limit_are_refused_before_reading(tmp_path, monkeypatch):
    monkeypatch.setattr("mri_cascade.images.MAX_FILE_BYTES", 1000)
    path = tmp_path / "big.png"
    synthetic_slice(1).save(path)
    with pytest.raises(ImageLoadError, match="'big.png' is 0 MB; the limit is 0 MB"):
        load_image(path)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=0, max_size=2048))
def test_random_bytes_yield_an_image_or_a_clear_error(data):
    try:
        slices = load_series(data)
    except ImageLoadError as error:
        assert str(error)
    else:
        assert slices and all(s.mode == "RGB" for s in slices)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"\x00" * 128 + b"DICM", b"\x1f\x8b", b"GIF89a"]),
       st.binary(max_size=1024))
def test_random_bytes_behind_real_magic_numbers_yield_an_image_or_a_clear_error(magic, tail):
    try:
        load_series(magic + tail)
    except ImageLoadError as error:  # a sentence for a person, never a bare exception's repr or a traceback
        message = str(error)
        assert message[:1].isalpha() and len(message.split()) >= 3
        assert "Traceback" not in message and "Error(" not in message


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


def test_the_api_refuses_every_bad_input_clearly_and_keeps_serving(client, tmp_path):
    good = tmp_path / "good.png"
    synthetic_slice(2).save(good)
    for name, content, message in BAD:
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(Exception, match=re.escape(message)):
            client.predict(handle_file(str(path)), api_name="/classify")
        assert client.predict(handle_file(str(good)), api_name="/classify")["label"] in LABEL_IDS


def test_the_api_answers_odd_but_valid_encodings(client, tmp_path):
    for name, content in ODD:
        path = tmp_path / name
        path.write_bytes(content)
        assert client.predict(handle_file(str(path)), api_name="/classify")["label"] in LABEL_IDS, name
