"""Running a classifier under ONNX Runtime (3-5x faster on CPU here than PyTorch, ``torch_backend``).

The ONNX file lives at ``<model>/onnx/model.onnx`` (the Hub's usual place) and records the identity of the
weights it was exported from (``weights_sha256``); a stale export is never used. A model larger than
``MAX_FILE_BYTES`` keeps its weights in shards (``model-00001-of-0000N.safetensors`` and their index, as
``save_pretrained`` writes them) and its export's tensors in ``onnx/model.onnx_data_K`` files, so that no file is
too large for the repository.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np

ONNX_FILE = "onnx/model.onnx"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
"""Names the shards of a model saved in several files (``save_pretrained(max_shard_size=...)``)."""
MAX_FILE_BYTES = 19_000_000
"""No weights file, shard or ONNX data file is larger (the repository keeps files under 20 MB)."""
SOURCE_HASH_KEY = "source_safetensors_sha256"
ONNX_OUTPUTS = ["logits", "embedding"]
WORKERS_ENV = "MRI_CASCADE_THREADS"


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, remembered while its size and modification time stay the same: loading a cascade
    checks each weights file twice (fresh ONNX export, fitted refusal check)."""
    stat = os.stat(path)
    return _sha256(os.path.realpath(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=64)
def _sha256(path: str, _size: int, _mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_sha256(paths: Sequence[str | os.PathLike]) -> str:
    """The identity of a model's weights: the SHA-256 of its one ``model.safetensors``, or for shards the SHA-256
    of their SHA-256s in order (so a single file keeps the hash that exports and fitted checks recorded)."""
    if len(paths) == 1:
        return file_sha256(paths[0])
    return hashlib.sha256("\n".join(file_sha256(path) for path in paths).encode()).hexdigest()


def weights_files(location: str, find: Callable[[str, str], str | None] | None = None) -> list[str] | None:
    """Local paths of a model's weights: its ``model.safetensors``, or the shards its index names, in order; None
    when they cannot all be found. ``find(location, filename)`` gives a file's local path or None (default: a file
    in the directory ``location``; ``loading.resolve_file`` also fetches from the Hub)."""
    find = find or local_file
    single = find(location, WEIGHTS_FILE)
    if single is not None:
        return [single]
    index = find(location, WEIGHTS_INDEX_FILE)
    if index is None:
        return None
    with open(index, encoding="utf-8") as stream:
        shards = sorted(set(json.load(stream)["weight_map"].values()))
    paths = [find(location, shard) for shard in shards]
    return None if None in paths else paths


def local_file(folder: str, filename: str) -> str | None:
    path = os.path.join(folder, filename)
    return path if os.path.isfile(path) else None


def model_workers() -> int:
    """How many model runs go at once: ``$MRI_CASCADE_THREADS`` (set for a Ray worker from the CPUs it claims),
    else one per core this process may use."""
    if os.environ.get(WORKERS_ENV):
        return max(1, int(os.environ[WORKERS_ENV]))
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@lru_cache(maxsize=1)
def onnx_model_pool() -> ThreadPoolExecutor:
    """The workers that run ONNX models (``model_workers`` of them); shared by every cascade in the process, so
    that concurrent requests together never run more models at once than there are cores."""
    return ThreadPoolExecutor(max_workers=model_workers(), thread_name_prefix="onnx-model")


# a forked child inherits the pool but not its threads: work sent there would wait forever
os.register_at_fork(after_in_child=onnx_model_pool.cache_clear)


class OnnxRunner:
    """pixel_values (N, 3, H, W) -> (logits, embedding) under ONNX Runtime, on one thread by default.

    One thread, because the cascade runs its models side by side on ``onnx_model_pool``'s workers, a core each:
    on one scan these small models gain little from a second thread within a run (2 cores: detector 9.9 -> 8.1 ms,
    alzheimer-vs-tumor 3.1 -> 3.6 ms), while running two models at once nearly halves the cascade's time.
    """

    def __init__(self, onnx_path: str | os.PathLike, threads: int = 1):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3
        # Sessions share the same cores: threads that spin-wait after a run would starve the next one.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    def __call__(self, pixel_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, embedding = self.session.run(ONNX_OUTPUTS, {"pixel_values": np.ascontiguousarray(pixel_values, np.float32)})
        return logits, embedding


def fresh_onnx_runner(onnx_path: str | os.PathLike | None, weights_hash: str | None) -> OnnxRunner | None:
    """The export at ``onnx_path`` ready to run when it was exported from the weights whose ``weights_sha256`` is
    ``weights_hash`` and has today's outputs; None when it is missing, stale or cannot be opened. ONNX Runtime reads
    the recorded hash itself: the ``onnx`` package is not imported, which would add about a second to every start."""
    if not (onnx_path and weights_hash and os.path.isfile(onnx_path)):
        return None
    try:
        runner = OnnxRunner(onnx_path)
    except Exception:  # onnxruntime raises its own types for a damaged graph: not a usable export
        return None
    session = runner.session
    outputs = [output.name for output in session.get_outputs()]
    recorded = session.get_modelmeta().custom_metadata_map.get(SOURCE_HASH_KEY)
    return runner if outputs == ONNX_OUTPUTS and recorded == weights_hash else None


class GreyPreprocessor:
    """The EfficientNet/ViT/Bit-style image processor's resize-rescale-normalise, done once on one grey channel.

    Cascade inputs are grey replicated to RGB, so resizing one channel and broadcasting gives the processor's
    exact output at a third of the cost. ``for_settings`` returns None for settings it does not reproduce.
    """

    def __init__(self, height: int, width: int, resample: int, scale: float, mean: np.ndarray, std: np.ndarray):
        self.height, self.width, self.resample = height, width, resample
        self.scale, self.mean, self.std = scale, mean.reshape(1, 3, 1, 1), std.reshape(1, 3, 1, 1)

    @classmethod
    def for_settings(cls, settings: dict) -> GreyPreprocessor | None:
        """From an image processor's settings (its ``preprocessor_config.json``); every switch must be written
        out, since a missing one means the processor class's default."""
        size = settings.get("size") or {}
        kind = settings.get("image_processor_type", "")
        written = {"do_resize", "do_rescale", "do_normalize", "resample", "rescale_factor", "image_mean", "image_std"}
        if kind.startswith("EfficientNetImageProcessor"):
            written |= {"include_top", "rescale_offset", "do_center_crop"}
        elif kind.startswith("BitImageProcessor"):  # DINOv2's, resizing straight to height x width
            written |= {"do_center_crop"}
        elif not kind.startswith("ViTImageProcessor"):
            return None
        supported = (
            written <= set(settings) and settings["do_resize"] and settings["do_rescale"] and settings["do_normalize"]
            and not settings.get("do_center_crop") and not settings.get("include_top")
            and not settings.get("rescale_offset") and {"height", "width"} <= set(size)
        )
        if not supported:
            return None
        return cls(size["height"], size["width"], int(settings["resample"]), float(settings["rescale_factor"]),
                   np.asarray(settings["image_mean"], dtype=np.float64), np.asarray(settings["image_std"], dtype=np.float64))

    def __call__(self, images) -> np.ndarray:
        grey = np.stack([
            np.asarray(image.getchannel(0).resize((self.width, self.height), resample=self.resample)) for image in images
        ])[:, None].astype(np.float64)
        return ((grey * self.scale - self.mean) / self.std).astype(np.float32)
