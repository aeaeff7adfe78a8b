"""Refusing what is not a brain MRI slice: how far an image's embeddings lie from the training scans'.

Each model's embedding (the input of its classification head) is scaled to unit length and the four are
concatenated. The training scans span a low-dimensional subspace of that space (its principal components);
an image's *unfamiliarity* is the length of the part of its features that the subspace cannot explain,
divided by the largest such length among the validation scans. Above 1 the cascade refuses to answer.
No labelled out-of-distribution data is needed: the subspace comes from training scans, the limit from
validation scans.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

FAMILIARITY_FILE = "familiarity.safetensors"
"""Lives in the disease-detector model's folder (or Hub repo), the cascade's entry point."""
DEFAULT_COMPONENTS = 128
LIMIT_TOLERANCE = 1e-6
REFUSAL_REASON = (
    "This does not look like a 2-D brain MRI slice of the kind MRI Cascade was trained on (greyscale axial, "
    "coronal or sagittal slices of the head), so it gives no diagnosis. Photos, charts, documents, noise, "
    "blank frames and scans of other body parts are refused."
)


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

    def unfamiliarity(self, embeddings: dict[str, np.ndarray]) -> np.ndarray:
        """Per image: residual length over the limit; above 1 means refuse."""
        centred = joined_features(embeddings, self.tasks) - self.mean
        residual = centred - (centred @ self.components.T) @ self.components
        return np.linalg.norm(residual, axis=1) / self.limit

    def save(self, path: str | os.PathLike) -> None:
        from safetensors.numpy import save_file

        metadata = {"limit": repr(self.limit), "tasks": json.dumps(self.tasks),
                    "weights_sha256": json.dumps(self.weights_sha256)}
        # safetensors writes raw memory: PCA's components are a transposed (Fortran-ordered) view
        tensors = {"mean": self.mean, "components": self.components}
        save_file({name: np.ascontiguousarray(value, dtype=np.float32) for name, value in tensors.items()},
                  str(path), metadata=metadata)

    @classmethod
    def load(cls, path: str | os.PathLike) -> FamiliarityCheck:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as stored:
            metadata = stored.metadata()
            mean, components = stored.get_tensor("mean"), stored.get_tensor("components")
        return cls(json.loads(metadata["tasks"]), mean.astype(np.float64), components.astype(np.float64),
                   float(metadata["limit"]), json.loads(metadata["weights_sha256"]))


def weights_sha256(models_dir) -> dict[str, str]:
    """Task -> SHA-256 of its model.safetensors in a local models directory: what a check is fitted on."""
    from pathlib import Path

    from .labels import TASKS
    from .runtime import WEIGHTS_FILE, file_sha256

    return {task: file_sha256(Path(models_dir) / task / WEIGHTS_FILE) for task in TASKS}


def fit_familiarity(train_embeddings: dict[str, np.ndarray], validation_embeddings: dict[str, np.ndarray],
                    weights_sha256: dict[str, str], components: int = DEFAULT_COMPONENTS) -> FamiliarityCheck:
    """Principal subspace of the training scans' features; the limit is the largest validation residual."""
    from sklearn.decomposition import PCA

    tasks = sorted(train_embeddings)
    features = joined_features(train_embeddings, tasks)
    pca = PCA(n_components=min(components, *features.shape), random_state=0).fit(features)
    check = FamiliarityCheck(tasks, pca.mean_, pca.components_, 1.0, weights_sha256)
    # inclusive: the least familiar validation scan (and any copy of it) must pass once stored in float32
    check.limit = float(check.unfamiliarity(validation_embeddings).max()) * (1 + LIMIT_TOLERANCE)
    return check


def _refused_share(scores: np.ndarray, groups: np.ndarray) -> dict:
    """Overall and per-group share of ``scores`` above 1, with counts."""
    share = {"images": len(scores), "refused": int((scores > 1).sum()), "refused_share": float((scores > 1).mean())}
    share["by_group"] = {str(group): {"images": int((groups == group).sum()), "refused": int((scores[groups == group] > 1).sum())}
                         for group in sorted(set(groups.tolist()))}
    return share


def unfamiliarity_histogram(scores: dict[str, np.ndarray], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, axes = plt.subplots(figsize=(7, 4))
    edges = np.logspace(np.log10(0.2), np.log10(max(5.0, *(s.max() for s in scores.values()))), 60)
    for name, values in scores.items():
        axes.hist(values, bins=edges, alpha=0.6, label=name, density=True)
    axes.axvline(1.0, color="k", linestyle="--", label="refusal limit")
    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axes.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes.set_xticks([0.25, 0.5, 1, 2, 4])
    axes.set_xlabel("unfamiliarity (residual / largest validation residual)")
    axes.set_ylabel("density")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def fit_and_report(models_dir, splits, out_dir, validation_fraction: float = 0.15, seed: int = 42,
                   components: int = DEFAULT_COMPONENTS) -> dict:
    """Fit the refusal check on the training script's training part, set its limit on its validation split,
    store it beside the disease detector, and measure refusals on the test splits and on generated non-MRI
    pictures: a development set (seed 0, looked at while choosing the method) and a held-out set (seed 1)."""
    from pathlib import Path

    from .cascade import Cascade, load_stage, model_location
    from .data import carve_validation
    from .labels import TASKS
    from .probes import non_mri_images, other_brain_mri

    models_dir, out_dir = Path(models_dir), Path(out_dir)
    cascade = Cascade({task: load_stage(model_location(models_dir, task), task) for task in TASKS})
    train, validation = carve_validation(splits["train"], validation_fraction, seed)
    probes = {"development": non_mri_images(seed=0), "held_out": non_mri_images(seed=1, scale=2)}
    inputs = {"train": train["image"], "validation": validation["image"], "test": splits["test"]["image"],
              **{f"non_mri_{name}": [image for _, image in pairs] for name, pairs in probes.items()},
              "other_brain_mri": [other_brain_mri()]}
    embeddings = {}
    for name, images in inputs.items():
        print(f"embedding {len(images)} {name} images ...", flush=True)
        embeddings[name] = cascade.run_models(images, 16)[1]
    check = fit_familiarity(embeddings["train"], embeddings["validation"], weights_sha256(models_dir), components)
    check.save(models_dir / "disease-detector" / FAMILIARITY_FILE)
    scores = {name: check.unfamiliarity(embeddings[name]) for name in inputs}
    groups = {"validation": np.asarray(validation["label_id"]), "test": np.asarray(splits["test"]["label_id"]),
              **{f"non_mri_{name}": np.array([category for category, _ in pairs]) for name, pairs in probes.items()}}
    report = {
        "method": f"residual of the 4 models' unit-length embeddings outside their top {check.components.shape[0]} "
                  "principal components (training part), over the largest validation residual",
        "training_images": len(train), "limit": check.limit,
        **{name: _refused_share(scores[name], groups[name]) for name in groups},
        "other_brain_mri": {"what": "matplotlib's sample MRI s1045.ima (sagittal head, another scanner)",
                            "unfamiliarity": float(scores["other_brain_mri"][0])},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    for folder in (out_dir, models_dir / "disease-detector"):  # the detector's model card quotes it
        (folder / "familiarity.json").write_text(json.dumps(report, indent=2))
    unfamiliarity_histogram({"official test scans": scores["test"], "non-MRI, held out": scores["non_mri_held_out"]},
                            out_dir / "unfamiliarity.png")
    return report
