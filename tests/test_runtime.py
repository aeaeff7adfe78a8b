"""The ONNX Runtime path: exact export, fresh-export check, and the fast grey preprocessing."""

import threading

import numpy as np
import pytest
import torch
from conftest import save_tiny_models, synthetic_slice

from mri_cascade import Cascade, ModelLoadError, load_image
from mri_cascade.labels import TASKS
from mri_cascade.runtime import ONNX_FILE, GreyPreprocessor, fresh_onnx_export, onnx_model_pool
from mri_cascade.torch_backend import export_onnx


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
    assert not fresh_onnx_export(path, root / "disease-detector" / "model.safetensors")
    assert Cascade.from_pretrained(root).stages["disease-detector"].backend == "torch"


def test_a_stale_onnx_export_is_not_used(exported_models, tmp_path):
    import shutil

    root = tmp_path / "models"
    shutil.copytree(exported_models, root)
    weights = root / "tumor-type" / "model.safetensors"
    weights.write_bytes(weights.read_bytes() + b"")  # same bytes: still fresh
    assert fresh_onnx_export(root / "tumor-type" / ONNX_FILE, weights)
    save_tiny_models(root, seed=1)  # retrained weights, old export left behind
    assert not fresh_onnx_export(root / "tumor-type" / ONNX_FILE, weights)
    cascade = Cascade.from_pretrained(root)
    assert {stage.backend for stage in cascade.stages.values()} == {"torch"}
    with pytest.raises(ModelLoadError, match="no up-to-date ONNX export"):
        Cascade.from_pretrained(root, backend="onnx")


def test_grey_preprocessing_equals_the_image_processor(tiny_cascade):
    processor = tiny_cascade.stages["tumor-type"].processor
    fast = GreyPreprocessor.for_processor(processor)
    assert fast is not None
    images = [load_image(synthetic_slice(i, size=(300 + 17 * i, 280))) for i in range(3)]
    expected = processor(images, return_tensors="np")["pixel_values"]
    np.testing.assert_allclose(fast(images), expected, atol=1e-6)
