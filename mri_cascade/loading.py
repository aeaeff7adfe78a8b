"""Finding and loading the four models and the refusal check: a local directory or a Hub prefix."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .decisions import OPERATING_POINTS
from .familiarity import FAMILIARITY_FILE, FamiliarityCheck
from .images import crop_to_head
from .labels import DISEASE_DETECTOR, FAMILIES, TASKS
from .runtime import (
    ONNX_FILE,
    GreyPreprocessor,
    fresh_onnx_runner,
    model_workers,
    onnx_model_pool,
    weights_files,
    weights_sha256,
)

HUB_PREFIX = "mri-cascade/mri"
"""The Hub prefix of the published models (``mri-cascade/mri-disease-detector``, ...)."""
def checkout_models() -> Path | None:
    """The shipped ``models/`` of a checkout: beside the package (an editable install, or running from the
    checkout), else in the working directory (a plain ``pip install .`` used from the checkout); None outside one."""
    for folder in (Path(__file__).resolve().parent.parent / "models", Path.cwd() / "models"):
        if all((folder / task / "config.json").is_file() for task in TASKS):
            return folder
    return None


DEFAULT_MODELS: str | Path = checkout_models() or HUB_PREFIX
"""The shipped models of a checkout when there are some, else the Hub prefix."""
MODELS_ENV = "MRI_CASCADE_MODELS"
"""Environment variable naming the models: a local directory or a Hub prefix (default: ``DEFAULT_MODELS``)."""
OPERATING_POINTS_KEY = "operating_points"
SERIES_OPERATING_POINTS_KEY = "series_operating_points"
"""The disease detector's thresholds for a patient's pooled series (same shape as ``operating_points``); without
it, a series is answered with the slice thresholds."""
TEST_TIME_FLIPS_KEY = "test_time_flips"
"""A model config's switch (true/false): the cascade averages its logits over each image and its mirror image."""
CROP_TO_HEAD_KEY = "crop_to_head"
"""A model config's switch (true/false): the model reads each slice cropped to the head (``images.crop_to_head``)."""
LEGACY_THRESHOLD_KEY, LEGACY_DEFAULT_THRESHOLD = "healthy_threshold", 0.5
HUB_PROBE_SECONDS = 2.0
"""How long the one request that tells whether the Hub answers may take (``hub_reachable``)."""
CONFIG_FILE, PROCESSOR_FILE = "config.json", "preprocessor_config.json"
logger = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """A cascade model could not be loaded; the message names the model and where it was looked for."""


def read_operating_points(config, key: str = OPERATING_POINTS_KEY) -> dict[str, dict[str, float]] | None:
    """Operating point -> family -> healthy threshold, from the disease detector's config under ``key``. Without
    ``operating_points`` (models from before they existed) its single ``healthy_threshold`` holds everywhere;
    without ``series_operating_points``: None."""
    stored = getattr(config, key, None)
    if not stored and key != OPERATING_POINTS_KEY:
        return None
    if not stored:
        legacy = float(getattr(config, LEGACY_THRESHOLD_KEY, LEGACY_DEFAULT_THRESHOLD))
        return {point: dict.fromkeys(FAMILIES, legacy) for point in OPERATING_POINTS}
    try:
        points = {point: {family: float(stored[point][family]) for family in FAMILIES} for point in OPERATING_POINTS}
    except (KeyError, TypeError, ValueError) as error:
        raise ModelLoadError(f"the disease detector's {key} must give a threshold for each of "
                             f"{list(FAMILIES)} under each of {list(OPERATING_POINTS)}; found {stored!r}") from error
    for point, thresholds in points.items():
        if not all(0.0 <= value <= 1.0 for value in thresholds.values()):
            raise ModelLoadError(f"the disease detector's {key} {point} thresholds {thresholds} are not probabilities")
    return points


def model_location(source: str | os.PathLike | None, task: str) -> str:
    """Where a task's model lives: ``<dir>/<task>`` for a local directory, else the Hub repo ``<prefix>-<task>``."""
    if source is None:
        source = os.environ.get(MODELS_ENV) or DEFAULT_MODELS
    if os.path.isdir(source):
        return str(Path(source) / task)
    return f"{source}-{task}"


class ModelConfig(SimpleNamespace):
    """A model's ``config.json`` as attributes, read without transformers: importing it (and torch with it) took
    about half of a cold start. ``id2label`` has int keys and ``label2id`` int values, as in transformers."""

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> ModelConfig:
        with open(path, encoding="utf-8") as stream:
            values = json.load(stream)
        if not isinstance(values, dict):
            raise ValueError(f"{path} does not hold a JSON object")
        id2label = {int(index): name for index, name in (values.get("id2label") or {}).items()}
        label2id = {name: int(index) for name, index in (values.get("label2id") or {}).items()}
        return cls(**{**values, "id2label": id2label, "label2id": label2id or {v: k for k, v in id2label.items()}})


@dataclass
class Stage:
    """One loaded model: its config (classes, threshold), its image processor's settings and a function giving
    logits and embeddings."""

    config: object  # ModelConfig, or the transformers config of a model loaded in PyTorch
    processor_settings: dict  # the image processor's preprocessor_config.json
    run: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # pixel_values (N, 3, H, W) -> logits, embedding
    location: str
    backend: str  # "onnx" or "torch"

    _torch_model: object = field(default=None, init=False, repr=False)
    _torch_model_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        self.resize_and_normalise: Callable[[list], np.ndarray] = GreyPreprocessor.for_settings(
            self.processor_settings) or (lambda images: self.processor(images, return_tensors="np")["pixel_values"])
        self.test_time_flips = bool(getattr(self.config, TEST_TIME_FLIPS_KEY, False))
        self.crop_to_head = bool(getattr(self.config, CROP_TO_HEAD_KEY, False))

    @cached_property
    def processor(self):
        """The transformers image processor, loaded on first use: for settings ``GreyPreprocessor`` does not
        reproduce."""
        from transformers import AutoImageProcessor

        return AutoImageProcessor.from_pretrained(self.location, trust_remote_code=False)

    @property
    def preprocessing_key(self) -> str:
        """Equal for stages whose inputs are prepared identically (they share one preprocessing pass)."""
        return json.dumps([self.crop_to_head, self.processor_settings], sort_keys=True, default=str)

    def preprocess(self, images: list) -> np.ndarray:
        """Loaded slices -> the model's pixel values: cropped to the head if its config says so, then resized and
        normalised as its image processor does."""
        return self.resize_and_normalise([crop_to_head(image) for image in images] if self.crop_to_head else images)

    def model_inputs(self, pixel_values: np.ndarray) -> list[np.ndarray]:
        """The model runs that one reading of these images takes: the images, and with test-time flips also
        their left-right mirror images."""
        return [pixel_values, np.ascontiguousarray(pixel_values[..., ::-1])] if self.test_time_flips else [pixel_values]

    def start_runs(self, pixel_values: np.ndarray) -> list[list[Future]]:
        """Start the runs of ``model_inputs``, for ``merge``. An ONNX model's go to ``onnx_model_pool``, each batch
        split into one part per worker: the cascade's models then run side by side, a core each, and a large
        batch still keeps every core busy to the end. A PyTorch model's run here and now, whole (PyTorch already
        spreads one run over every core)."""
        if self.backend == "onnx":
            pool, workers = onnx_model_pool(), model_workers()
            return [[pool.submit(self.run, part) for part in np.array_split(inputs, max(1, min(len(inputs), workers)))]
                    for inputs in self.model_inputs(pixel_values)]
        runs = []
        for inputs in self.model_inputs(pixel_values):
            runs.append([Future()])
            runs[-1][0].set_result(self.run(inputs))
        return runs

    @staticmethod
    def merge(runs: list[list[Future]]) -> tuple[np.ndarray, np.ndarray]:
        """(logits, embedding) from the runs of ``start_runs``. With test-time flips, the logits are the mean over
        each image and its mirror image; the embedding stays the image's own, which is what the refusal check was
        fitted on."""
        outputs = []
        for parts in runs:
            results = [part.result() for part in parts]
            outputs.append([np.concatenate([result[index] for result in results]) for index in (0, 1)])
        return np.mean([logits for logits, _ in outputs], axis=0), outputs[0][1]

    def logits_and_embedding(self, pixel_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The model's logits and embeddings for these images (see ``merge``)."""
        return self.merge(self.start_runs(pixel_values))

    @property
    def torch_model(self):
        """The PyTorch model (for gradients: heatmaps), loaded on first use when the stage runs on ONNX. The app
        loads it in a background thread while requests may ask for it too: a lock of this stage's own makes it
        load once (``functools.cached_property`` holds no lock from Python 3.12 on)."""
        if self.backend == "torch":
            return self.run.model
        with self._torch_model_lock:
            if self._torch_model is None:
                from transformers import AutoModelForImageClassification

                self._torch_model = AutoModelForImageClassification.from_pretrained(
                    self.location, use_safetensors=True, trust_remote_code=False,
                    local_files_only=cache_only(self.location)).eval()
            return self._torch_model


@cache
def hub_reachable() -> bool:
    """Whether the Hub may be asked for files: not in offline mode (``HF_HUB_OFFLINE``) and answering one request
    within ``HUB_PROBE_SECONDS``. Asked once per process: without it, each file of a model the Hub cannot send is
    retried five times with backoff (about 25 s) before the load fails. When False, only cached copies are read."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    if constants.HF_HUB_OFFLINE:
        return False
    try:
        get_session().head(constants.ENDPOINT, timeout=HUB_PROBE_SECONDS)
    except Exception:  # no route, no name, refused, timed out: the HTTP client's errors have no common base here
        return False
    return True


def cache_only(location: str) -> bool:
    """True for a Hub repo that must be read from the local cache alone (``hub_reachable`` is False)."""
    return not os.path.isdir(location) and not hub_reachable()


def resolve_file(location: str, filename: str) -> str | None:
    """Local path of ``filename`` in a model directory or Hub repo (downloaded or cached), None if absent."""
    try:
        return required_file(location, filename)
    except Exception:  # absent, not on the Hub, offline without a cached copy, ...
        return None


def required_file(location: str, filename: str) -> str:
    """Local path of ``filename`` in a model directory or Hub repo (downloaded or cached); raises when absent."""
    if os.path.isdir(location):
        path = os.path.join(location, filename)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{location} has no {filename}")
        return path
    from huggingface_hub import hf_hub_download

    return hf_hub_download(location, filename, local_files_only=cache_only(location))


def model_weights_sha256(location: str) -> str | None:
    """``runtime.weights_sha256`` of the model in a directory or Hub repo; None when its weights cannot be found."""
    paths = weights_files(location, resolve_file)
    return weights_sha256(paths) if paths else None


def resolve_onnx_export(location: str) -> str | None:
    """Local path of the model's ONNX export with its external data files beside it (a Hub repo's whole ``onnx/``
    folder is fetched), None if absent."""
    if os.path.isdir(location):
        return resolve_file(location, ONNX_FILE)
    try:
        from huggingface_hub import snapshot_download

        folder = snapshot_download(location, allow_patterns=[f"{os.path.dirname(ONNX_FILE)}/*"],
                                   local_files_only=cache_only(location))
    except Exception:  # not on the Hub, offline without a cached copy, ...
        return None
    path = os.path.join(folder, ONNX_FILE)
    return path if os.path.isfile(path) else None


def load_stage(location: str, task: str, backend: str = "auto") -> Stage:
    """Load one task's model for inference: its ONNX export when present and fresh (``backend`` auto/onnx), else
    PyTorch. Its config must name exactly the task's classes in ``id2label``. The ONNX path reads the config
    files as JSON and never imports transformers or torch."""
    config = ModelConfig.from_json_file(required_file(location, CONFIG_FILE))
    expected, found = set(TASKS[task].classes), set(config.id2label.values())
    if found != expected:
        raise ModelLoadError(
            f"the {task} model at {location} has classes {sorted(found)} in config.json (id2label), "
            f"expected {sorted(expected)}"
        )
    with open(required_file(location, PROCESSOR_FILE), encoding="utf-8") as stream:
        processor_settings = json.load(stream)
    if backend in ("auto", "onnx"):
        onnx_path = resolve_onnx_export(location)
        runner = fresh_onnx_runner(onnx_path, model_weights_sha256(location))
        if runner is not None:
            return Stage(config, processor_settings, runner, location, "onnx")
        if onnx_path is not None:  # a stale or damaged export: answers stay right, at a third of the speed
            logger.warning("the ONNX export at %s is not from these weights or cannot be opened: running %s in "
                           "PyTorch (re-export with `mri-cascade export-onnx`)", onnx_path, task)
        if backend == "onnx":
            raise ModelLoadError(f"no up-to-date ONNX export at {location}/{ONNX_FILE}")
    from transformers import AutoModelForImageClassification

    from .torch_backend import TorchRunner

    model = AutoModelForImageClassification.from_pretrained(location, use_safetensors=True, trust_remote_code=False,
                                                            local_files_only=cache_only(location))
    return Stage(model.config, processor_settings, TorchRunner(model), location, "torch")


def load_familiarity(source: str | os.PathLike | None) -> FamiliarityCheck | None:
    """The refusal check stored beside the disease detector, None (with a warning) when there is none.
    A check that exists but cannot be fetched stops the start rather than let the cascade answer everything.
    A check fitted on other weights than the models' own is refused: it would measure the wrong thing."""
    location = model_location(source, DISEASE_DETECTOR.name)
    if os.path.isdir(location):
        path = resolve_file(location, FAMILIARITY_FILE)
    else:  # only a check that the Hub says is absent may be done without; a failed download must not fail open
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import RemoteEntryNotFoundError

        try:
            path = hf_hub_download(location, FAMILIARITY_FILE, local_files_only=cache_only(location))
        except RemoteEntryNotFoundError:
            path = None
        except Exception as error:
            raise ModelLoadError(f"could not fetch the refusal check {location}/{FAMILIARITY_FILE}: {error}") from error
    if path is None:
        logger.warning("no %s beside the disease detector: the cascade will answer every input", FAMILIARITY_FILE)
        return None
    try:
        check = FamiliarityCheck.load(path)
    except Exception as error:
        raise ModelLoadError(f"the refusal check at {path} cannot be read: {error}") from error
    for task, expected in check.weights_sha256.items():
        if model_weights_sha256(model_location(source, task)) != expected:
            raise ModelLoadError(f"the refusal check at {path} was fitted on other {task} weights; "
                                 "run `mri-cascade fit-familiarity` again")
    return check


def load_stages(source: str | os.PathLike | None, backend: str = "auto") -> dict[str, Stage]:
    """The four models from ``source`` (see ``Cascade.from_pretrained``); any failure names the model and path."""
    stages = {}
    for task in TASKS:
        location = model_location(source, task)
        try:
            stages[task] = load_stage(location, task, backend)
        except ModelLoadError:
            raise
        except Exception as error:  # any failure to load (missing, corrupt, pickle-only ...) stops the start-up
            problem, hint = str(error), ""
            if not os.path.isdir(location):
                if not hub_reachable():
                    problem = "the Hub cannot be reached from here (offline) and no cached copy is on this machine"
                hint = (f" (no local models given, so the Hub prefix {source or os.environ.get(MODELS_ENV) or DEFAULT_MODELS} "
                        f"was tried; offline or without the Hub, set {MODELS_ENV} to a directory that holds the four "
                        "model folders, e.g. a checkout's models/)")
            raise ModelLoadError(f"could not load the {task} model from {location}: {problem}{hint}") from error
    return stages
