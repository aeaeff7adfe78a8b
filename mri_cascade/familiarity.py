"""Refusing what is not a brain MRI slice: how far an image's embeddings lie from the training scans'.

Each model's embedding (the input of its classification head) is scaled to unit length and the four are
concatenated. The training scans span a low-dimensional subspace of that space (its principal components);
an image's *unfamiliarity* is the length of the part of its features that the subspace cannot explain,
divided by the largest such length among the validation scans.

That check alone lets real medical images of the wrong kind through (an abdominal MR looks "scan-like" enough), so
a second test learns what is *not* a brain MRI slice: a logistic regression on the same features, brain scans of the
training part against non-brain pictures (generated non-MRI pictures and real non-brain medical images of the
development part of ``probes``). Its limit lies halfway, in log-odds, between the highest score among the
validation scans and the lowest among those development pictures. The *unfamiliarity* is
the larger of the two ratios (score over limit); above 1 the cascade refuses to answer (``decisions.refuses``).

A head CT is refused by a test of its own, whatever its unfamiliarity: a logistic regression, brain MRI against
head CT (``ct_probability``), on the same features and on the pixel features that set CT apart
(``modality.pixel_features``: where the bright pixels lie, a bone ring at the head's edge or not). It learned from
every CT source the project has, with bleeds and infarcts painted in and other windows (``research.ct_probes``); its
limit (``ct_limit``) comes from the training MRI's out-of-fold scores. The reason then says that it looks like CT.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache

import numpy as np
from threadpoolctl import ThreadpoolController

FAMILIARITY_FILE = "familiarity.safetensors"
"""Lives in the disease-detector model's folder (or Hub repo), the cascade's entry point."""
DEFAULT_COMPONENTS = 128
LIMIT_TOLERANCE = 1e-6
REFUSAL_REASON = (
    "This does not look like a 2-D brain MRI slice of the kind MRI Cascade was trained on (greyscale axial, "
    "coronal or sagittal slices of the head), so it gives no diagnosis. Photos, charts, documents, noise, "
    "blank frames and scans of other body parts are refused."
)
CT_REFUSAL_REASON = (
    "This looks like a CT scan, not an MRI. MRI Cascade reads only "
    "2-D brain MRI slices, so it gives no diagnosis; upload an MRI slice (T1, T2 or FLAIR) instead."
)


@cache
def blas_controller() -> ThreadpoolController:
    """The process's BLAS thread pools, found once (a lookup per call costs ~1 ms with torch loaded).

    numpy's own BLAS, the one the check's matrix products run on, is loaded with numpy and so is always among
    them; a BLAS loaded later (scipy's, on first import) is not, and is left alone."""
    return ThreadpoolController()


def joined_features(embeddings: dict[str, np.ndarray], tasks: list[str]) -> np.ndarray:
    parts = []
    for task in tasks:
        embedding = np.asarray(embeddings[task], dtype=np.float64)
        parts.append(embedding / np.maximum(np.linalg.norm(embedding, axis=1, keepdims=True), 1e-12))
    return np.concatenate(parts, axis=1)


@dataclass
class FamiliarityCheck:
    tasks: list[str]  # whose embeddings, in this order
    mean: np.ndarray  # (features,)
    components: np.ndarray  # (components, features), orthonormal rows
    limit: float  # residual length of the least familiar validation scan
    weights_sha256: dict[str, str]  # task -> SHA-256 of the model.safetensors the embeddings came from
    other_weights: np.ndarray | None = None  # (features,): logistic regression, "not a brain MRI slice" is positive
    other_bias: float = 0.0
    other_limit: float = 1.0  # P(not a brain MRI slice) above which the second test refuses
    ct_weights: np.ndarray | None = None  # (features + PIXEL_FEATURES,): logistic regression, head CT is positive
    ct_bias: float = 0.0
    ct_limit: float = 1.0  # P(head CT) above which the CT test refuses
    pixel_mean: np.ndarray | None = None  # (PIXEL_FEATURES,): the pixel features' standardisation
    pixel_scale: np.ndarray | None = None

    def residual_ratio(self, features: np.ndarray) -> np.ndarray:
        centred = features - self.mean
        residual = centred - (centred @ self.components.T) @ self.components
        return np.linalg.norm(residual, axis=1) / self.limit

    def other_probability(self, features: np.ndarray) -> np.ndarray:
        """P(not a brain MRI slice) from the second test; zeros when the check has none."""
        if self.other_weights is None:
            return np.zeros(len(features))
        return 1 / (1 + np.exp(-(features @ self.other_weights + self.other_bias)))

    def ct_features(self, embeddings: dict[str, np.ndarray], pixels: np.ndarray) -> np.ndarray:
        """The CT test's input: the joined embeddings, then the pixel features standardised and scaled to about
        unit length, as each model's embedding is."""
        standard = (np.asarray(pixels, dtype=np.float64) - self.pixel_mean) / self.pixel_scale
        return np.concatenate([joined_features(embeddings, self.tasks), standard / np.sqrt(standard.shape[1])], axis=1)

    def ct_probability(self, embeddings: dict[str, np.ndarray], pixels: np.ndarray) -> np.ndarray:
        """P(head CT) from the CT test, per image; zeros when the check has none."""
        if self.ct_weights is None:
            return np.zeros(len(pixels))
        with blas_controller().limit(limits=1, user_api="blas"):
            return 1 / (1 + np.exp(-(self.ct_features(embeddings, pixels) @ self.ct_weights + self.ct_bias)))

    def looks_like_ct(self, embeddings: dict[str, np.ndarray], pixels: np.ndarray) -> np.ndarray:
        return self.ct_probability(embeddings, pixels) > self.ct_limit

    def unfamiliarity(self, embeddings: dict[str, np.ndarray]) -> np.ndarray:
        """Per image: the larger of residual length over its limit and P(not a brain MRI slice) over its limit;
        above 1 means refuse.

        Its matrix products run on one BLAS thread: they are too small to gain from more, and a multi-threaded
        OpenBLAS call leaves its threads spin-waiting on every core afterwards, which starved the ONNX models of
        the next scan (2 cores: 18 -> 31 ms a scan)."""
        with blas_controller().limit(limits=1, user_api="blas"):
            features = joined_features(embeddings, self.tasks)
            return np.maximum(self.residual_ratio(features), self.other_probability(features) / self.other_limit)

    def save(self, path: str | os.PathLike) -> None:
        from safetensors.numpy import save_file

        metadata = {"limit": repr(self.limit), "tasks": json.dumps(self.tasks),
                    "weights_sha256": json.dumps(self.weights_sha256),
                    "other_bias": repr(self.other_bias), "other_limit": repr(self.other_limit),
                    "ct_bias": repr(self.ct_bias), "ct_limit": repr(self.ct_limit)}
        # safetensors writes raw memory: PCA's components are a transposed (Fortran-ordered) view
        tensors = {"mean": self.mean, "components": self.components}
        if self.other_weights is not None:
            tensors["other_weights"] = self.other_weights
        if self.ct_weights is not None:
            tensors.update(ct_weights=self.ct_weights, pixel_mean=self.pixel_mean, pixel_scale=self.pixel_scale)
        save_file({name: np.ascontiguousarray(value, dtype=np.float32) for name, value in tensors.items()},
                  str(path), metadata=metadata)

    @classmethod
    def load(cls, path: str | os.PathLike) -> FamiliarityCheck:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as stored:
            metadata = stored.metadata()
            mean, components = stored.get_tensor("mean"), stored.get_tensor("components")
            optional = {name: stored.get_tensor(name).astype(np.float64) if name in stored.keys() else None
                        for name in ("other_weights", "ct_weights", "pixel_mean", "pixel_scale")}
        return cls(json.loads(metadata["tasks"]), mean.astype(np.float64), components.astype(np.float64),
                   float(metadata["limit"]), json.loads(metadata["weights_sha256"]), optional["other_weights"],
                   float(metadata.get("other_bias", 0.0)), float(metadata.get("other_limit", 1.0)),
                   optional["ct_weights"], float(metadata.get("ct_bias", 0.0)), float(metadata.get("ct_limit", 1.0)),
                   optional["pixel_mean"], optional["pixel_scale"])
