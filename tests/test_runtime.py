"""The ONNX Runtime path: exact export, fresh-export check, and the fast grey preprocessing."""

import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import save_tiny_models, synthetic_slice

from mri_cascade import Cascade, ModelLoadError, load_image
from mri_cascade.labels import TASKS
from mri_cascade.loading import model_weights_sha256
from mri_cascade.runtime import ONNX_FILE, GreyPreprocessor, file_sha256, fresh_onnx_runner, onnx_model_pool
from mri_cascade.torch_backend import export_onnx, save_onnx


@pytest.fixture(scope="module")
def exported_models(tmp_path_factory):
    root = save_tiny_models(tmp_path_factory.mktemp("onnx-models"))
    for task in TASKS:
        export_onnx(root / task)
    return root


def test_onnx_cascade_matches_the_torch_cascade(exported_models):
    fast = Cascade.from_pretrained(exported_models)
    reference = Cascade.from_pretrained(exported_models, backend="torch")
    assert {stage.backend for stage in fast.stages.values()} == {"onnx"}
    images = [synthetic_slice(i, lesion=i % 2 == 0) for i in range(6)]
    for a, b in zip(fast.predict_batch(images), reference.predict_batch(images)):
        assert a.label == b.label
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-5)
    fast_embeddings, reference_embeddings = fast.run_models(images)[1], reference.run_models(images)[1]
    for task in TASKS:  # the embedding output the refusal check reads
        assert fast_embeddings[task].shape == (6, 16)
        np.testing.assert_allclose(fast_embeddings[task], reference_embeddings[task], atol=1e-5)


@pytest.fixture
def two_model_workers(monkeypatch):
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    onnx_model_pool.cache_clear()
    yield
    onnx_model_pool.cache_clear()


def test_onnx_models_run_side_by_side_a_core_each(exported_models, two_model_workers):
    """Catches running the cascade's ONNX models one after another, or each on every core."""
    cascade = Cascade.from_pretrained(exported_models)
    assert {stage.run.session.get_session_options().intra_op_num_threads for stage in cascade.stages.values()} == {1}
    reference = cascade.run_models([synthetic_slice(3)])[0]
    both_running = threading.Barrier(2, timeout=20)
    threads = []
    for task in ("disease-detector", "tumor-type"):
        def run_alongside(pixels, run=cascade.stages[task].run):
            threads.append(threading.current_thread().name)
            both_running.wait()  # broken (an error) unless the other model runs at the same time
            return run(pixels)

        cascade.stages[task].run = run_alongside
    logits = cascade.run_models([synthetic_slice(3)])[0]
    assert len(threads) == 2 and all(name.startswith("onnx-model") for name in threads)
    for task in TASKS:
        np.testing.assert_allclose(logits[task], reference[task], atol=1e-6)


def test_a_forked_process_can_still_run_the_onnx_models(exported_models):
    """Catches a forked child inheriting the parent's model pool without its threads (its runs would never start)."""
    import multiprocessing

    cascade = Cascade.from_pretrained(exported_models)
    expected = cascade.run_models([synthetic_slice(2)])[0]  # the parent's pool now exists
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=lambda: results.put(cascade.run_models([synthetic_slice(2)])[0]))
    child.start()
    try:
        logits = results.get(timeout=60)
    finally:
        child.join(5)
        child.kill()
    for task in TASKS:
        np.testing.assert_allclose(logits[task], expected[task], atol=1e-6)


def test_an_export_without_the_embedding_output_is_not_used(exported_models, tmp_path):
    import shutil

    import onnx

    root = shutil.copytree(exported_models, tmp_path / "models")
    path = root / "disease-detector" / ONNX_FILE
    graph = onnx.load(str(path))
    graph.graph.output.pop()  # an export from before the embedding output
    onnx.save(graph, str(path))
    assert fresh_onnx_runner(path, model_weights_sha256(str(root / "disease-detector"))) is None
    assert Cascade.from_pretrained(root).stages["disease-detector"].backend == "torch"


def test_a_stale_onnx_export_is_not_used(exported_models, tmp_path, caplog):
    import shutil

    root = tmp_path / "models"
    shutil.copytree(exported_models, root)
    weights = root / "tumor-type" / "model.safetensors"
    weights.write_bytes(weights.read_bytes() + b"")  # same bytes: still fresh
    assert fresh_onnx_runner(root / "tumor-type" / ONNX_FILE, model_weights_sha256(str(weights.parent))) is not None
    save_tiny_models(root, seed=1)  # retrained weights, old export left behind
    assert fresh_onnx_runner(root / "tumor-type" / ONNX_FILE, model_weights_sha256(str(weights.parent))) is None
    with caplog.at_level("WARNING"):
        cascade = Cascade.from_pretrained(root)
    assert {stage.backend for stage in cascade.stages.values()} == {"torch"}
    assert "running tumor-type in PyTorch" in caplog.text  # a slower start is never silent
    with pytest.raises(ModelLoadError, match="no up-to-date ONNX export"):
        Cascade.from_pretrained(root, backend="onnx")


def test_grey_preprocessing_equals_the_image_processor(tiny_cascade):
    """The settings read from the model's preprocessor_config.json give the transformers processor's pixels."""
    stage = tiny_cascade.stages["tumor-type"]
    processor = stage.processor
    fast = GreyPreprocessor.for_settings(stage.processor_settings)
    assert fast is not None and stage.processor_settings == json.loads(
        (Path(stage.location) / "preprocessor_config.json").read_text())
    images = [load_image(synthetic_slice(i, size=(300 + 17 * i, 280))) for i in range(3)]
    expected = processor(images, return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(fast(images), expected, atol=1e-6)


def test_a_model_in_shards_with_its_export_in_data_files_runs_on_onnx(exported_models, tmp_path):
    """A model above the repository's file size (DINOv2-S: 88 MB) is saved in shards and exported with its tensors
    in several data files. Catches an export or a freshness check that reads only ``model.safetensors``, an
    export whose data files pass the size limit, and a refusal check that cannot find sharded weights."""
    import shutil

    import onnx
    from conftest import fit_tiny_familiarity
    from transformers import AutoModelForImageClassification

    root = shutil.copytree(exported_models, tmp_path / "models")
    folder = root / "tumor-type"
    single_file_hash = file_sha256(folder / "model.safetensors")
    assert model_weights_sha256(str(folder)) == single_file_hash  # what earlier exports and checks recorded
    model = AutoModelForImageClassification.from_pretrained(folder)
    (folder / "model.safetensors").unlink()
    model.save_pretrained(folder, max_shard_size=2_000)
    assert len(list(folder.glob("model-*.safetensors"))) > 1
    assert model_weights_sha256(str(folder)) not in (None, single_file_hash)
    export_onnx(folder)
    save_onnx(onnx.load(str(folder / ONNX_FILE)), folder / ONNX_FILE, max_file_bytes=8_000)
    data_files = list((folder / "onnx").glob("model.onnx_data_*"))
    assert len(data_files) > 1 and all(path.stat().st_size <= 8_000 for path in data_files)
    fit_tiny_familiarity(root)

    fast = Cascade.from_pretrained(root)
    reference = Cascade.from_pretrained(root, backend="torch")
    assert fast.stages["tumor-type"].backend == "onnx" and fast.familiarity is not None
    images = [synthetic_slice(i, lesion=True) for i in range(3)]
    np.testing.assert_allclose(fast.stage_logits(images)["tumor-type"], reference.stage_logits(images)["tumor-type"],
                               atol=1e-5)
    shard = sorted(folder.glob("model-*.safetensors"))[-1]
    shard.write_bytes(shard.read_bytes()[:-4] + b"\x00" * 4)  # one shard retrained
    assert fresh_onnx_runner(folder / ONNX_FILE, model_weights_sha256(str(folder))) is None
    with pytest.raises(ModelLoadError, match="fitted on other tumor-type weights"):
        Cascade.from_pretrained(root)


def test_grey_preprocessing_equals_dinov2s_image_processor():
    """DINOv2's ``BitImageProcessor`` (resize to height x width, ImageNet mean and std) has the fast path too."""
    from transformers import BitImageProcessor

    processor = BitImageProcessor(size={"height": 112, "width": 112}, do_center_crop=False,
                                  image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    settings = json.loads(processor.to_json_string())
    fast = GreyPreprocessor.for_settings(settings)
    assert fast is not None
    assert GreyPreprocessor.for_settings({**settings, "do_center_crop": True}) is None
    images = [load_image(synthetic_slice(i, size=(300 + 17 * i, 280))) for i in range(3)]
    np.testing.assert_allclose(fast(images), processor(images, return_tensors="np")["pixel_values"], atol=1e-5)


def test_the_onnx_cascade_starts_and_answers_without_torch_or_transformers(exported_models, tmp_path):
    """Catches a start-up that imports torch, transformers or onnx again (together about half of a cold start)."""
    import subprocess
    import sys

    scan = tmp_path / "scan.png"
    synthetic_slice(4).save(scan)
    code = ("import sys; from mri_cascade import Cascade; "
            "cascade = Cascade.from_pretrained(sys.argv[1]); print(cascade.predict(sys.argv[2]).label); "
            "print(sorted(m for m in ('torch', 'transformers', 'onnx') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code, str(exported_models), str(scan)],
                         capture_output=True, text=True, check=True)
    label, imported = run.stdout.strip().splitlines()
    assert imported == "[]"
    assert label == Cascade.from_pretrained(exported_models).predict(scan).label


def test_processor_settings_it_cannot_reproduce_go_through_the_transformers_processor(tiny_models, tmp_path):
    """Catches a fast path taken for settings it would get wrong (here a centre crop)."""
    import shutil

    root = shutil.copytree(tiny_models, tmp_path / "models")
    settings_file = root / "tumor-type" / "preprocessor_config.json"
    settings = json.loads(settings_file.read_text())
    settings_file.write_text(json.dumps({**settings, "do_center_crop": True, "crop_size": {"height": 40, "width": 40}}))
    stage = Cascade.from_pretrained(root).stages["tumor-type"]
    assert GreyPreprocessor.for_settings(stage.processor_settings) is None
    images = [load_image(synthetic_slice(1))]
    pixels = stage.resize_and_normalise(images)
    assert pixels.shape[-2:] == (40, 40)
    np.testing.assert_allclose(pixels, stage.processor(images, return_tensors="np")["pixel_values"])


def test_the_shipped_heatmap_runs_on_onnx_without_loading_pytorch(exported_models):
    """Occlusion re-runs the ONNX models: no stage loads its PyTorch model for it (the app no longer loads them at
    start-up). Catches an occlusion path that falls back to the PyTorch models."""
    cascade = Cascade.from_pretrained(exported_models)
    assert {stage.backend for stage in cascade.stages.values()} == {"onnx"}
    scan = synthetic_slice(2, lesion=True)
    assert cascade.explain(scan).heatmap.max() == pytest.approx(1.0)
    assert all(stage._torch_model is None for stage in cascade.stages.values())


def test_a_stage_loads_its_pytorch_model_once_however_many_threads_ask(exported_models, monkeypatch):
    import threading
    import time

    import transformers

    loads = []
    original = transformers.AutoModelForImageClassification.from_pretrained

    def slow_load(*args, **kwargs):
        loads.append(args[0])
        time.sleep(0.2)  # long enough for every thread to ask while the first one loads
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForImageClassification, "from_pretrained", slow_load)
    stage = Cascade.from_pretrained(exported_models).stages["tumor-type"]
    models = []
    threads = [threading.Thread(target=lambda: models.append(stage.torch_model)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(loads) == 1 and len(models) == 4 and all(model is models[0] for model in models)
