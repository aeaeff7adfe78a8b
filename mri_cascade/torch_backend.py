"""The PyTorch side of running a classifier: the model as (logits, embedding), and its ONNX export. Imported only
when a model runs on PyTorch, is exported, or explains its answer (Grad-CAM), so that serving on ONNX Runtime never
imports torch."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import torch

from .runtime import MAX_FILE_BYTES, ONNX_FILE, ONNX_OUTPUTS, SOURCE_HASH_KEY, weights_files, weights_sha256

ONNX_DATA_SUFFIX = "_data_"
"""``model.onnx_data_K``: the K-th file of an export's external tensors (``save_onnx``)."""


class LogitsAndEmbedding(torch.nn.Module):
    """An image classifier that also returns its image embedding: the input of its classification head
    (``model.classifier``, as in every transformers image classifier), flattened to (N, features)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        # per thread, and only during this module's own forward: concurrent calls and other users of the model
        # (Grad-CAM) must not see each other's embeddings
        self._state = threading.local()
        model.classifier.register_forward_hook(self._capture)

    def _capture(self, _module: torch.nn.Module, args: tuple, _output: torch.Tensor) -> None:
        captured = getattr(self._state, "captured", None)
        if captured is not None:
            captured.append(args[0])

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._state.captured = captured = []
        try:
            logits = self.model(pixel_values=pixel_values).logits
        finally:
            self._state.captured = None
        return logits, captured[0].flatten(1)


def export_onnx(model_dir: str | os.PathLike) -> Path:
    """Export ``model_dir``'s classifier to ``model_dir/onnx/model.onnx`` with a dynamic batch axis."""
    import onnx
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model_dir = Path(model_dir)
    model = AutoModelForImageClassification.from_pretrained(model_dir, use_safetensors=True).eval()
    size = AutoImageProcessor.from_pretrained(model_dir).size
    example = torch.zeros(2, 3, size["height"], size["width"])
    target = model_dir / ONNX_FILE
    target.parent.mkdir(exist_ok=True)
    torch.onnx.export(
        LogitsAndEmbedding(model).eval(), (example,), str(target), input_names=["pixel_values"],
        output_names=ONNX_OUTPUTS,
        dynamic_shapes={"pixel_values": {0: torch.export.Dim("batch")}}, dynamo=True, verbose=False,
    )
    exported = onnx.load(str(target))  # with the weights the exporter may have written beside it
    onnx.helper.set_model_props(exported, {SOURCE_HASH_KEY: weights_sha256(weights_files(str(model_dir)))})
    for leftover in [*target.parent.glob("*.data"), *target.parent.glob(f"{target.name}{ONNX_DATA_SUFFIX}*")]:
        leftover.unlink()  # the exporter's weights file, and an earlier export's data files (saving appends)
    save_onnx(exported, target)
    return target


def save_onnx(model, target: Path, max_file_bytes: int = MAX_FILE_BYTES) -> None:
    """Save an ONNX model inline when it fits in ``max_file_bytes``, else with its larger tensors in files of at
    most that size beside it (``model.onnx_data_0``, ``_1``, ...; ONNX Runtime finds them by the graph's records)."""
    import onnx
    from onnx.external_data_helper import set_external_data

    if model.ByteSize() > max_file_bytes:
        chunk, filled = 0, 0
        for tensor in model.graph.initializer:
            size = len(tensor.raw_data)
            if size < 1024:  # small constants stay in the graph
                continue
            if filled and filled + size > max_file_bytes:
                chunk, filled = chunk + 1, 0
            set_external_data(tensor, location=f"{target.name}{ONNX_DATA_SUFFIX}{chunk}")
            filled += size
    onnx.save_model(model, str(target))


class TorchRunner:
    """pixel_values (N, 3, H, W) -> (logits, embedding), as numpy arrays."""

    def __init__(self, model: torch.nn.Module):
        self.model = model.eval()
        self.network = LogitsAndEmbedding(self.model)

    @torch.inference_mode()
    def __call__(self, pixel_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, embedding = self.network(torch.from_numpy(pixel_values))
        return logits.numpy(), embedding.numpy()
