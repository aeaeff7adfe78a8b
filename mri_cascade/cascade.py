"""The four-model cascade: healthy or disease, Alzheimer's or tumor, then severity or type."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification

from .calibration import TEMPERATURE_KEY, softmax
from .explain import Explanation, display_size, grad_cam, overlay_heatmap, uncrop
from .familiarity import CT_REFUSAL_REASON, FAMILIARITY_FILE, REFUSAL_REASON, FamiliarityCheck
from .images import ImageSource, crop_to_head, head_box, load_image, load_slices
from .labels import ALZHEIMER_SEVERITY, ALZHEIMER_VS_TUMOR, DISEASE_DETECTOR, FAMILIES, LABELS, TASKS, TUMOR_TYPE
from .medical import NOT_BRAIN_MRI_KEY
from .modality import bone_rim
from .runtime import (
    ONNX_FILE,
    WEIGHTS_FILE,
    GreyPreprocessor,
    OnnxRunner,
    TorchRunner,
    file_sha256,
    fresh_onnx_export,
    model_workers,
    onnx_model_pool,
)

DEFAULT_MODELS = Path(__file__).resolve().parent.parent / "models"
MODELS_ENV = "MRI_CASCADE_MODELS"
"""Environment variable naming the models: a local directory or a Hub prefix (default: the shipped models/)."""


OPERATING_POINTS = ("balanced", "screening")
"""The named healthy-threshold settings in the disease detector's config (``operating_points``): ``balanced``, the
best validation end-to-end accuracy, and ``screening``, >= 95 % validation disease recall in each scan family."""
DEFAULT_OPERATING_POINT = "balanced"
OPERATING_POINTS_KEY = "operating_points"
TEST_TIME_FLIPS_KEY = "test_time_flips"
"""A model config's switch (true/false): the cascade averages its logits over each image and its mirror image."""
CROP_TO_HEAD_KEY = "crop_to_head"
"""A model config's switch (true/false): the model reads each slice cropped to the head (``images.crop_to_head``)."""
LEGACY_THRESHOLD_KEY, LEGACY_DEFAULT_THRESHOLD = "healthy_threshold", 0.5
REFUSED_DISPLAY_NAME = "No answer: not a brain MRI slice"
HEADER_REFUSAL = "MRI Cascade reads only 2-D brain MRI slices, so it gives no diagnosis."
logger = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """A cascade model could not be loaded; the message names the model and where it was looked for."""


@dataclass
class StageResult:
    name: str  # the task, e.g. "disease-detector"
    title: str
    probabilities: dict[str, float]  # the model's classes -> probability
    decision: str


@dataclass
class CascadeResult:
    label: str | None  # one of the seven label ids; None when refused
    display_name: str
    probabilities: dict[str, float]  # all seven label ids -> joint probability, summing to 1; empty when refused
    stages: list[StageResult]  # the stages on the path taken, in order; empty when refused
    refused: bool = False  # True when the input does not look like a brain MRI slice: no diagnosis
    reason: str | None = None  # why it was refused, in plain words; for a series: also which slices were left out
    # and how many answered slices on their own disagree with the patient answer
    unfamiliarity: float | None = None  # how unlike the training scans the input is; above 1 is refused
    operating_point: str = DEFAULT_OPERATING_POINT  # which healthy thresholds decided it

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SeriesResult(CascadeResult):
    """One answer for a patient's series (label, probabilities, stages) plus every slice's own result. Its
    ``unfamiliarity`` is that of its least familiar answered slice."""

    slices: list[CascadeResult] = field(default_factory=list)


def pool_series(stage_probabilities: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each model's class probabilities pooled over a series' slices: their plain mean (a linear opinion pool).
    Every slice weighs 1/N, so one odd slice can move any probability by at most 1/N and cannot veto what the
    others agree on (a geometric mean lets one near-zero slice do exactly that). A lesion seen on few slices is
    diluted rather than lost: ``Cascade.predict_series`` names the slices that disagree."""
    return {task: np.asarray(probabilities, dtype=float).mean(axis=0, keepdims=True)
            for task, probabilities in stage_probabilities.items()}


def scan_families(p_alzheimer_vs_tumor: np.ndarray) -> np.ndarray:
    """Each scan's family as stage 2 names it, healthy or not: "alzheimer" when P(alzheimer) >= P(tumor)."""
    p = np.asarray(p_alzheimer_vs_tumor).reshape(-1, 2)
    return np.where(p[:, 0] >= p[:, 1], FAMILIES[0], FAMILIES[1])


def calls_healthy(p_healthy: np.ndarray, families: np.ndarray, thresholds: dict[str, float]) -> np.ndarray:
    """The cascade's one healthy rule: a scan is healthy iff P(healthy) is strictly above its family's threshold
    (a tie counts as disease: missing a disease costs more than a false alarm)."""
    limits = np.array([thresholds[family] for family in np.atleast_1d(families)], dtype=float)
    return np.atleast_1d(np.asarray(p_healthy, dtype=float)) > limits


def read_operating_points(config) -> dict[str, dict[str, float]]:
    """Operating point -> family -> healthy threshold, from the disease detector's config. A config without
    ``operating_points`` (models from before they existed) uses its single ``healthy_threshold`` everywhere."""
    stored = getattr(config, OPERATING_POINTS_KEY, None)
    if not stored:
        legacy = float(getattr(config, LEGACY_THRESHOLD_KEY, LEGACY_DEFAULT_THRESHOLD))
        return {point: dict.fromkeys(FAMILIES, legacy) for point in OPERATING_POINTS}
    try:
        points = {point: {family: float(stored[point][family]) for family in FAMILIES} for point in OPERATING_POINTS}
    except (KeyError, TypeError, ValueError) as error:
        raise ModelLoadError(f"the disease detector's {OPERATING_POINTS_KEY} must give a threshold for each of "
                             f"{list(FAMILIES)} under each of {list(OPERATING_POINTS)}; found {stored!r}") from error
    for point, thresholds in points.items():
        if not all(0.0 <= value <= 1.0 for value in thresholds.values()):
            raise ModelLoadError(f"the disease detector's {point} thresholds {thresholds} are not probabilities")
    return points


def check_operating_point(operating_point: str) -> str:
    if operating_point not in OPERATING_POINTS:
        raise ValueError(f"unknown operating point {operating_point!r}; choose one of {', '.join(OPERATING_POINTS)}")
    return operating_point


def model_location(source: str | os.PathLike | None, task: str) -> str:
    """Where a task's model lives: ``<dir>/<task>`` for a local directory, else the Hub repo ``<prefix>-<task>``."""
    if source is None:
        source = os.environ.get(MODELS_ENV) or DEFAULT_MODELS
    if os.path.isdir(source):
        return str(Path(source) / task)
    return f"{source}-{task}"


@dataclass
class Stage:
    """One loaded model: its config (classes, threshold), image processor and a function giving logits and
    embeddings."""

    config: object
    processor: object
    run: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # pixel_values (N, 3, H, W) -> logits, embedding
    location: str
    backend: str  # "onnx" or "torch"

    def __post_init__(self) -> None:
        self.resize_and_normalise: Callable[[list], np.ndarray] = GreyPreprocessor.for_processor(self.processor) or (
            lambda images: self.processor(images, return_tensors="np")["pixel_values"]
        )
        self.test_time_flips = bool(getattr(self.config, TEST_TIME_FLIPS_KEY, False))
        self.crop_to_head = bool(getattr(self.config, CROP_TO_HEAD_KEY, False))

    @property
    def preprocessing_key(self) -> str:
        """Equal for stages whose inputs are prepared identically (they share one preprocessing pass)."""
        return json.dumps([self.crop_to_head, self.processor.to_dict()], sort_keys=True, default=str)

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

    @cached_property
    def torch_model(self):
        """The PyTorch model (for gradients: heatmaps), loaded on first use when the stage runs on ONNX."""
        if isinstance(self.run, TorchRunner):
            return self.run.model
        model = AutoModelForImageClassification.from_pretrained(self.location, use_safetensors=True,
                                                                 trust_remote_code=False)
        return model.eval()


def resolve_file(location: str, filename: str) -> str | None:
    """Local path of ``filename`` in a model directory or Hub repo (downloaded or cached), None if absent."""
    if os.path.isdir(location):
        path = os.path.join(location, filename)
        return path if os.path.isfile(path) else None
    try:
        from huggingface_hub import hf_hub_download

        return hf_hub_download(location, filename)
    except Exception:  # not on the Hub, offline without a cached copy, ...
        return None


def load_stage(location: str, task: str, backend: str = "auto") -> Stage:
    """Load one task's model for inference: its ONNX export when present and fresh (``backend`` auto/onnx),
    else PyTorch. Its config must name exactly the task's classes in ``id2label``."""
    config = AutoConfig.from_pretrained(location, trust_remote_code=False)
    expected, found = set(TASKS[task].classes), set(config.id2label.values())
    if found != expected:
        raise ModelLoadError(
            f"the {task} model at {location} has classes {sorted(found)} in config.json (id2label), "
            f"expected {sorted(expected)}"
        )
    processor = AutoImageProcessor.from_pretrained(location, trust_remote_code=False)
    if backend in ("auto", "onnx"):
        onnx_path, weights_path = resolve_file(location, ONNX_FILE), resolve_file(location, WEIGHTS_FILE)
        if onnx_path and weights_path and fresh_onnx_export(onnx_path, weights_path):
            try:
                return Stage(config, processor, OnnxRunner(onnx_path), location, "onnx")
            except Exception as error:  # onnxruntime raises its own types for a damaged graph
                raise ModelLoadError(f"the ONNX export at {onnx_path} cannot be run: {error}") from error
        if backend == "onnx":
            raise ModelLoadError(f"no up-to-date ONNX export at {location}/{ONNX_FILE}")
    model = AutoModelForImageClassification.from_pretrained(location, use_safetensors=True, trust_remote_code=False)
    return Stage(model.config, processor, TorchRunner(model), location, "torch")


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
            path = hf_hub_download(location, FAMILIARITY_FILE)
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
        weights = resolve_file(model_location(source, task), WEIGHTS_FILE)
        if weights is None or file_sha256(weights) != expected:
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
            raise ModelLoadError(f"could not load the {task} model from {location}: {error}") from error
    return stages


class Cascade:
    def __init__(self, stages: dict[str, Stage], familiarity: FamiliarityCheck | None = None,
                 operating_point: str = DEFAULT_OPERATING_POINT):
        missing = set(TASKS) - set(stages)
        if missing:
            raise ValueError(f"cascade needs all four models; missing {sorted(missing)}")
        self.stages = stages
        self.familiarity = familiarity
        self.operating_points = read_operating_points(stages[DISEASE_DETECTOR.name].config)
        self.operating_point = check_operating_point(operating_point)
        # tasks whose image processors agree share one preprocessing pass
        self.preprocessing_groups: dict[str, list[str]] = {}
        for task, stage in stages.items():
            self.preprocessing_groups.setdefault(stage.preprocessing_key, []).append(task)
        # logit columns in each task's class order
        self.class_columns = {task: [stage.config.label2id[c] for c in TASKS[task].classes] for task, stage in stages.items()}

    @classmethod
    def from_pretrained(cls, source: str | os.PathLike | None = None, backend: str = "auto",
                        operating_point: str = DEFAULT_OPERATING_POINT) -> Cascade:
        """Load the four models from ``source``: a local directory holding one folder per task, or a Hub
        prefix such as ``org/mri`` (``org/mri-disease-detector``, ...). None means ``$MRI_CASCADE_MODELS``,
        else the shipped ``models/``. ``backend``: "auto" (ONNX Runtime where a fresh export exists),
        "onnx" or "torch". Weights load from safetensors or ONNX only; no remote code runs. The refusal check
        (``familiarity.safetensors`` beside the disease detector) loads too when present. ``operating_point``
        ("balanced" or "screening") is the default for every call; each call may name another."""
        check_operating_point(operating_point)
        return cls(load_stages(source, backend), load_familiarity(source), operating_point)

    def stage_probabilities(self, images: Sequence[ImageSource], batch_size: int = 8) -> dict[str, np.ndarray]:
        """Every model's class probabilities for every image, columns in each task's class order, each model's
        logits divided by the temperature its config stores (1 if none)."""
        return self.calibrated(self.stage_logits(images, batch_size))

    def calibrated(self, logits: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {task: softmax(values, float(getattr(self.stages[task].config, TEMPERATURE_KEY, 1.0)))
                for task, values in logits.items()}

    def stage_logits(self, images: Sequence[ImageSource], batch_size: int = 8) -> dict[str, np.ndarray]:
        """Every model's logits for every image, columns in each task's class order."""
        return self.run_models(images, batch_size)[0]

    def run_models(self, images: Sequence[ImageSource], batch_size: int = 8, header_notes: list | None = None,
                   ct_looks: list | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Every model's logits (columns in each task's class order) and image embeddings for every image.

        Images are preprocessed once per distinct image-processor setting, then every model runs on each batch,
        the ONNX ones side by side (``Stage.start_runs``).
        ``header_notes``, when given, receives each image's DICOM header note (why its header says it is not a
        brain MRI, else None), in order; ``ct_looks`` whether each image looks like a head CT (``modality.bone_rim``).
        """
        groups = list(self.preprocessing_groups.values())

        def prepare(chunk: Sequence[ImageSource]) -> list[np.ndarray]:
            loaded = [load_image(image) for image in chunk]
            if header_notes is not None:
                header_notes.extend(image.info.get(NOT_BRAIN_MRI_KEY) for image in loaded)
            if ct_looks is not None:
                ct_looks.extend(bone_rim(image).looks_like_ct for image in loaded)
            return [self.stages[tasks[0]].preprocess(loaded) for tasks in groups]

        logits: dict[str, list[np.ndarray]] = {task: [np.zeros((0, len(TASKS[task].classes)))] for task in TASKS}
        embeddings: dict[str, list[np.ndarray]] = {task: [] for task in TASKS}
        chunks = [images[start : start + batch_size] for start in range(0, len(images), batch_size)]
        # decode and resize the next chunk while the models run on this one (both release the GIL)
        with ThreadPoolExecutor(max_workers=1) as prefetcher:
            upcoming = prefetcher.submit(prepare, chunks[0]) if chunks else None
            for index in range(len(chunks)):
                pixels_per_group = upcoming.result()
                if index + 1 < len(chunks):
                    upcoming = prefetcher.submit(prepare, chunks[index + 1])
                runs = {task: self.stages[task].start_runs(pixels)
                        for tasks, pixels in zip(groups, pixels_per_group) for task in tasks}
                for task, task_runs in runs.items():
                    task_logits, task_embedding = self.stages[task].merge(task_runs)
                    logits[task].append(task_logits[:, self.class_columns[task]])
                    embeddings[task].append(task_embedding)
        return ({task: np.concatenate(parts) for task, parts in logits.items()},
                {task: np.concatenate(parts) if parts else np.zeros((0, 0)) for task, parts in embeddings.items()})

    def thresholds(self, operating_point: str | None = None) -> dict[str, float]:
        """Family -> healthy threshold at ``operating_point`` (default: the cascade's own)."""
        return self.operating_points[check_operating_point(operating_point or self.operating_point)]

    def combine(self, stage_probabilities: dict[str, np.ndarray], operating_point: str | None = None,
                thresholds: dict[str, float] | None = None) -> list[CascadeResult]:
        """Route each image down the cascade and form the joint distribution over the seven ids. The healthy
        thresholds are those of ``operating_point`` (default: the cascade's own), or ``thresholds`` when given
        (family -> threshold, for fitting them; the results then still carry the point's name)."""
        point = check_operating_point(operating_point or self.operating_point)
        detector = stage_probabilities[DISEASE_DETECTOR.name]
        healthy = calls_healthy(detector[:, 0], scan_families(stage_probabilities[ALZHEIMER_VS_TUMOR.name]),
                                thresholds or self.operating_points[point])
        return [
            self._combine_one({task: probabilities[i] for task, probabilities in stage_probabilities.items()},
                              bool(healthy[i]), point)
            for i in range(len(detector))
        ]

    @staticmethod
    def _combine_one(p: dict[str, np.ndarray], healthy: bool, operating_point: str) -> CascadeResult:
        p_healthy, disease = p[DISEASE_DETECTOR.name]
        alzheimer, tumor = p[ALZHEIMER_VS_TUMOR.name]
        joint = {"healthy": float(p_healthy)}
        for task, branch in ((ALZHEIMER_SEVERITY, alzheimer), (TUMOR_TYPE, tumor)):
            for label, cls in task.class_of.items():
                joint[label] = float(disease * branch * p[task.name][task.classes.index(cls)])
        total = sum(joint.values())
        joint = {label: joint[label] / total for label in LABELS}

        def stage(task, decision_index: int) -> StageResult:
            probabilities = {c: float(v) for c, v in zip(task.classes, p[task.name])}
            return StageResult(task.name, task.title, probabilities, task.classes[decision_index])

        if healthy:
            stages = [stage(DISEASE_DETECTOR, 0)]
            label = "healthy"
        else:
            branch_task = ALZHEIMER_SEVERITY if alzheimer >= tumor else TUMOR_TYPE
            choice = int(np.argmax(p[branch_task.name]))
            stages = [stage(DISEASE_DETECTOR, 1), stage(ALZHEIMER_VS_TUMOR, 0 if branch_task is ALZHEIMER_SEVERITY else 1),
                      stage(branch_task, choice)]
            label = next(k for k, v in branch_task.class_of.items() if v == branch_task.classes[choice])
        return CascadeResult(label, LABELS[label], joint, stages, operating_point=operating_point)

    def unfamiliarity(self, embeddings: dict[str, np.ndarray]) -> np.ndarray | None:
        """Per image: how unlike the training scans it is (above 1: refused); None without a refusal check."""
        return None if self.familiarity is None else self.familiarity.unfamiliarity(embeddings)

    def with_refusals(self, results: list[CascadeResult], embeddings: dict[str, np.ndarray],
                      header_notes: Sequence[str | None] | None = None,
                      ct_looks: Sequence[bool] | None = None) -> list[CascadeResult]:
        """``results`` with every input that does not look like a brain MRI slice replaced by a refusal: too
        unfamiliar to the refusal check, or looking like a head CT to it (``FamiliarityCheck.refuses``), or with a
        DICOM header note (``run_models``) that names another modality or body part, whose words then lead the
        reason. A refused image that looks like CT is told so."""
        if not results:
            return results
        scores = self.unfamiliarity(embeddings)
        notes = header_notes or [None] * len(results)
        ct_looks = ct_looks or [False] * len(results)
        refused = (np.zeros(len(results), bool) if scores is None
                   else self.familiarity.refuses(scores, np.asarray(ct_looks, dtype=bool)))
        refined = []
        for index, result in enumerate(results):
            score = None if scores is None else float(scores[index])
            if notes[index] or refused[index]:
                reason = (f"{notes[index]} {HEADER_REFUSAL}" if notes[index]
                          else CT_REFUSAL_REASON if ct_looks[index] else REFUSAL_REASON)
                refined.append(CascadeResult(None, REFUSED_DISPLAY_NAME, {}, [], True, reason, score,
                                             result.operating_point))
            else:
                refined.append(replace(result, unfamiliarity=score))
        return refined

    def predict_batch(self, images: Sequence[ImageSource], batch_size: int = 8, refuse_unfamiliar: bool = True,
                      operating_point: str | None = None) -> list[CascadeResult]:
        """One result per image, decided at ``operating_point`` (default: the cascade's own). Inputs that do
        not look like a brain MRI slice get ``refused=True``, a ``reason`` and no label, unless
        ``refuse_unfamiliar`` is False."""
        check_operating_point(operating_point or self.operating_point)
        notes: list[str | None] = []
        ct_looks: list[bool] = []
        logits, embeddings = self.run_models(images, batch_size, header_notes=notes, ct_looks=ct_looks)
        results = self.combine(self.calibrated(logits), operating_point)
        return self.with_refusals(results, embeddings, notes, ct_looks) if refuse_unfamiliar else results

    def predict(self, image: ImageSource, refuse_unfamiliar: bool = True,
                operating_point: str | None = None) -> CascadeResult:
        return self.predict_batch([image], refuse_unfamiliar=refuse_unfamiliar, operating_point=operating_point)[0]

    def predict_series(self, images: ImageSource | Sequence[ImageSource], batch_size: int = 8,
                       refuse_unfamiliar: bool = True, operating_point: str | None = None) -> SeriesResult:
        """One answer for a patient from several slices: files, arrays, a multi-frame DICOM or a NIfTI volume
        (whose empty slices the loader skips). Each model's probabilities are pooled over the slices with
        ``pool_series``, then routed through the cascade exactly as for one slice. Refused slices (not
        brain-MRI-like) are left out of the pool; when every slice is refused, so is the series. When answered
        slices on their own disagree with the patient answer, ``reason`` says how many and what they say."""
        point = check_operating_point(operating_point or self.operating_point)
        slices = load_slices(images)
        notes: list[str | None] = []
        ct_looks: list[bool] = []
        logits, embeddings = self.run_models(slices, batch_size, header_notes=notes, ct_looks=ct_looks)
        probabilities = self.calibrated(logits)
        per_slice = self.combine(probabilities, point)
        if refuse_unfamiliar:
            per_slice = self.with_refusals(per_slice, embeddings, notes, ct_looks)
        answered = [index for index, result in enumerate(per_slice) if not result.refused]
        if not answered:  # every slice was refused
            reasons = " ".join(dict.fromkeys(result.reason for result in per_slice))  # each distinct reason once
            reason = f"None of the {len(slices)} slices looks like a brain MRI slice. {reasons}"
            scores = [result.unfamiliarity for result in per_slice]
            worst = None if None in scores else max(scores)
            return SeriesResult(None, REFUSED_DISPLAY_NAME, {}, [], True, reason, worst, point, slices=per_slice)
        (patient,) = self.combine(pool_series({task: p[answered] for task, p in probabilities.items()}), point)
        remarks = []
        if len(answered) < len(slices):
            remarks.append(f"{len(slices) - len(answered)} of {len(slices)} slices did not look like brain MRI "
                         "and were left out.")
        dissent = Counter(per_slice[index].display_name for index in answered if per_slice[index].label != patient.label)
        if dissent:
            said = ", ".join(f"{name} ({count})" for name, count in dissent.most_common())
            remarks.append(f"{sum(dissent.values())} of {len(answered)} answered slices on their own say otherwise: {said}.")
        patient.reason = " ".join(remarks) or None
        scores = [per_slice[index].unfamiliarity for index in answered]  # None without a check
        patient.unfamiliarity = None if None in scores else max(scores)
        return SeriesResult(**vars(patient), slices=per_slice)

    def explain(self, image: ImageSource, result: CascadeResult | None = None) -> Explanation:
        """Grad-CAM heatmap of the stage that decided ``result`` (default: this image's prediction), for the
        class it chose, over the image. Refused inputs have no decision to explain: ValueError."""
        loaded = load_image(image)
        return self.explain_batch([loaded], result or self.predict(loaded))[0]

    def explain_batch(self, images: Sequence[ImageSource], result: CascadeResult,
                      batch_size: int = 8) -> list[Explanation]:
        """Heatmaps of ``result``'s deciding stage and class over each image, e.g. every slice of a series
        for the patient answer."""
        if result.refused:
            raise ValueError("a refused input has no diagnosis to explain")
        deciding = result.stages[-1]
        stage = self.stages[deciding.name]
        target_index = int(stage.config.label2id[deciding.decision])
        explanations = []
        for start in range(0, len(images), batch_size):
            chunk = [load_image(image) for image in images[start : start + batch_size]]
            for image, heatmap in zip(chunk, grad_cam(stage.torch_model, stage.preprocess(chunk), target_index)):
                shown = display_size(image)
                box = head_box(image) if stage.crop_to_head else None
                if box is not None:  # the model saw the head's crop: put its map back where the head is
                    heatmap = uncrop(heatmap, box, image, shown)
                explanations.append(Explanation(deciding.name, deciding.decision, *overlay_heatmap(shown, heatmap)))
        return explanations
