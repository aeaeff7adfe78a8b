"""Nothing a user uploads is kept or logged: uploads are deleted within the cache TTL, and never logged."""

import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import PATIENT_ID, dicom_bytes, free_port, synthetic_slice
from gradio_client import Client, handle_file


def gradio_cache() -> Path:
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio")


def leftovers(stem: str) -> list[Path]:
    return [p for p in gradio_cache().rglob("*") if stem in p.name] if gradio_cache().exists() else []


@pytest.fixture(scope="module")
def short_ttl_client(tiny_cascade):
    os.environ["MRI_CASCADE_CACHE_TTL"] = "2"
    try:
        from app import build_demo

        demo = build_demo(tiny_cascade)
    finally:
        del os.environ["MRI_CASCADE_CACHE_TTL"]
    demo.queue(default_concurrency_limit=1)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield Client(f"http://127.0.0.1:{port}", verbose=False)
    demo.close()


def wait_until_gone(stem: str, seconds: float = 15) -> list[Path]:
    deadline = time.time() + seconds
    while leftovers(stem) and time.time() < deadline:
        time.sleep(0.5)
    return leftovers(stem)


def test_api_uploads_are_gone_after_the_ttl(short_ttl_client, tmp_path):
    good, bad = tmp_path / "privacy-api-good.png", tmp_path / "privacy-api-bad.jpg"
    synthetic_slice(1).save(good)
    bad.write_bytes(b"not an image")
    short_ttl_client.predict(handle_file(str(good)), api_name="/classify")
    with pytest.raises(Exception, match="not a readable image"):
        short_ttl_client.predict(handle_file(str(bad)), api_name="/classify")
    short_ttl_client.predict([handle_file(str(good))], api_name="/classify_series")
    assert wait_until_gone("privacy-api") == []


def test_ui_uploads_are_gone_after_the_ttl(short_ttl_client, tmp_path):
    scan = tmp_path / "privacy-ui-scan.png"
    synthetic_slice(2).save(scan)
    short_ttl_client.predict(handle_file(str(scan)), api_name="/show")
    assert leftovers("privacy-ui")  # the upload was stored ...
    assert wait_until_gone("privacy-ui") == []  # ... and deleted within the TTL


def test_no_file_name_image_bytes_or_patient_field_is_logged(client_logs):
    logged, secrets = client_logs
    for secret in secrets:
        assert secret not in logged


@pytest.fixture
def client_logs(app_url, tmp_path, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    client = Client(app_url, verbose=False)
    named = tmp_path / "privacy-log-Smith-John.png"
    synthetic_slice(3).save(named)
    dicom = tmp_path / "privacy-log-series.dcm"
    dicom.write_bytes(dicom_bytes(np.stack([np.asarray(synthetic_slice(i), dtype=np.uint16) * 16 for i in range(2)])))
    broken = tmp_path / "privacy-log-Smith-broken.jpg"
    broken.write_bytes(b"junk")
    client.predict(handle_file(str(named)), api_name="/classify")
    client.predict([handle_file(str(dicom))], api_name="/classify_series")
    with pytest.raises(Exception):  # noqa: B017 - the message is checked elsewhere
        client.predict(handle_file(str(broken)), api_name="/classify")
    captured = capfd.readouterr()
    return caplog.text + captured.out + captured.err, ["Smith", "Doe^Jane", PATIENT_ID, "privacy-log"]
