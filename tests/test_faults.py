"""Broken model folders: the cascade and the app refuse to start with a message naming the model and path."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO_ROOT, save_tiny_models

from mri_cascade import Cascade, ModelLoadError
from mri_cascade.labels import TASKS
from mri_cascade.runtime import ONNX_FILE
from mri_cascade.torch_backend import export_onnx


@pytest.fixture
def models(tmp_path):
    return save_tiny_models(tmp_path / "models")


def break_missing_folder(root):
    shutil.rmtree(root / "tumor-type")


def break_weights(root):
    (root / "tumor-type" / "model.safetensors").write_bytes(b"\x00garbage" * 100)


def break_labels(root):
    config = json.loads((root / "tumor-type" / "config.json").read_text())
    del config["id2label"], config["label2id"]
    (root / "tumor-type" / "config.json").write_text(json.dumps(config))


def pickle_only(root):
    import torch
    from safetensors.torch import load_file

    folder = root / "tumor-type"
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()


FAULTS = {
    "missing folder": (break_missing_folder, "tumor-type model from"),
    "corrupt safetensors": (break_weights, "tumor-type model from"),
    "config without id2label": (break_labels, "tumor-type model at .* has classes"),
    "pickle weights only": (pickle_only, "tumor-type model from"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_the_cascade_refuses_a_broken_model_naming_it(models, fault):
    breaker, message = FAULTS[fault]
    breaker(models)
    with pytest.raises(ModelLoadError, match=message) as error:
        Cascade.from_pretrained(models)
    assert str(models / "tumor-type") in str(error.value)


def test_a_damaged_onnx_export_is_ignored_for_pytorch(models):
    for task in TASKS:
        export_onnx(models / task)
    (models / "tumor-type" / ONNX_FILE).write_bytes(b"not a graph")
    cascade = Cascade.from_pretrained(models)
    assert cascade.stages["tumor-type"].backend == "torch"
    assert cascade.stages["disease-detector"].backend == "onnx"


@pytest.mark.parametrize("fault", ["missing folder", "corrupt safetensors"])
def test_the_app_refuses_to_start_with_a_clear_message(models, fault):
    FAULTS[fault][0](models)
    env = {**os.environ, "MRI_CASCADE_MODELS": str(models), "HF_HUB_OFFLINE": "1"}
    completed = subprocess.run([sys.executable, "app.py"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode != 0
    assert "MRI Cascade cannot start" in completed.stderr and str(models / "tumor-type") in completed.stderr
    assert "Traceback" not in completed.stderr
