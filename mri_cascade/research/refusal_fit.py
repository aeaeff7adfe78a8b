"""Fitting the refusal check (``familiarity.FamiliarityCheck``) on a cascade's embeddings, and measuring what it
refuses: validation and test scans, generated non-MRI pictures, real non-brain medical images, the collections' CT."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..decisions import refuses
from ..familiarity import DEFAULT_COMPONENTS, FAMILIARITY_FILE, LIMIT_TOLERANCE, FamiliarityCheck, joined_features
from ..labels import TASKS
from ..loading import model_weights_sha256
from .data import SPLIT_SEED, VALIDATION_FRACTION


def weights_sha256(models_dir) -> dict[str, str]:
    """Task -> its weights' SHA-256 (``runtime.weights_sha256``) in a local models directory: what a check is
    fitted on."""
    return {task: model_weights_sha256(str(Path(models_dir) / task)) for task in TASKS}


def fit_familiarity(train_embeddings: dict[str, np.ndarray], validation_embeddings: dict[str, np.ndarray],
                    weights_sha256: dict[str, str], components: int = DEFAULT_COMPONENTS,
                    other_embeddings: dict[str, np.ndarray] | None = None,
                    ct_looking_mri: dict[str, np.ndarray] | None = None) -> FamiliarityCheck:
    """Principal subspace of the training scans' features, its limit the largest validation residual; and, when
    ``other_embeddings`` (pictures that are not brain MRI slices) are given, the logistic regression that tells
    them from the training scans, its limit halfway (in log-odds) between the highest P(not a brain MRI slice) among
    validation scans and the lowest among those pictures. ``ct_looking_mri``: the MRI slices of the training data
    (training and validation parts) that ``modality.bone_rim`` takes for CT; the CT floor is their highest
    unfamiliarity, so that none of them is refused (0 when there are none; not given: the floor stays 1, no second
    CT test)."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    tasks = sorted(train_embeddings)
    features = joined_features(train_embeddings, tasks)
    validation = joined_features(validation_embeddings, tasks)
    pca = PCA(n_components=min(components, *features.shape), random_state=0).fit(features)
    check = FamiliarityCheck(tasks, pca.mean_, pca.components_, 1.0, weights_sha256)
    # inclusive: the least familiar validation scan (and any copy of it) must pass once stored in float32
    check.limit = float(check.residual_ratio(validation).max()) * (1 + LIMIT_TOLERANCE)
    if other_embeddings is not None:
        others = joined_features(other_embeddings, tasks)
        model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000).fit(
            np.concatenate([features, others]), np.r_[np.zeros(len(features)), np.ones(len(others))])
        check.other_weights, check.other_bias = model.coef_[0].astype(np.float64), float(model.intercept_[0])
        # the widest margin: halfway, in log-odds, between the least brain-like validation scan and the most
        # brain-like development picture, so that scans a little unlike validation ones still pass
        logit = lambda x: x @ check.other_weights + check.other_bias  # noqa: E731
        highest_validation = float(logit(validation).max())
        # without a margin, a hair above the least brain-like validation scan, in log-odds (never past P = 1)
        limit = max((highest_validation + float(logit(others).min())) / 2, highest_validation + LIMIT_TOLERANCE)
        check.other_limit = float(1 / (1 + np.exp(-limit)))
    if ct_looking_mri is not None:  # none of them: every picture that looks like CT is refused
        looking = len(next(iter(ct_looking_mri.values())))
        check.ct_floor = min(1.0, float(check.unfamiliarity(ct_looking_mri).max()) * (1 + LIMIT_TOLERANCE)) if looking else 0.0
    return check


def _refused_share(refused: np.ndarray, scores: np.ndarray, groups: np.ndarray) -> dict:
    """Overall and per-group count and share of ``refused``, with the least unfamiliarity of each group."""
    share = {"images": len(refused), "refused": int(refused.sum()), "refused_share": float(refused.mean()),
             "least_unfamiliarity": float(scores.min())}
    share["by_group"] = {str(group): {"images": int((groups == group).sum()), "refused": int(refused[groups == group].sum()),
                                      "least_unfamiliarity": float(scores[groups == group].min())}
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
    axes.set_xlabel("unfamiliarity (the larger of the two tests' ratios to their limits)")
    axes.set_ylabel("density")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def fit_and_report(models_dir, splits, out_dir, validation_fraction: float = VALIDATION_FRACTION, seed: int = SPLIT_SEED,
                   components: int = DEFAULT_COMPONENTS) -> dict:
    """Fit the refusal check on the training script's training part and the development parts of the probe sets,
    set its limits on its validation split, store it beside the disease detector, and measure refusals on the test
    splits, on generated non-MRI pictures (development: seed 0; held out: seed 1), on real non-brain medical
    images (development and held-out sources of ``probes.NON_BRAIN_PARTS``) and on the collections' own CT slices
    (``splits`` as ``data.load_sources(..., non_mri=True)`` loads them: those of the train split, with crops, flips
    and windows of them, are development material, those of the test split are held out)."""
    from ..cascade import Cascade
    from ..loading import load_stages
    from ..modality import bone_rim
    from .data import carve_validation, only_mri, only_non_mri
    from .probes import non_brain_medical_images, non_mri_images, other_brain_mri, picture_variants

    models_dir, out_dir = Path(models_dir), Path(out_dir)
    cascade = Cascade(load_stages(models_dir))
    train, validation = carve_validation(only_mri(splits["train"]), validation_fraction, seed)
    test = only_mri(splits["test"])
    rng = np.random.default_rng(seed)
    ct_development = [(f"{source}/{file}", image) for source, file, image in
                      zip(*(only_non_mri(splits["train"])[column] for column in ("source", "file", "image")))]
    ct_development += [(name, variant) for name, image in list(ct_development)
                       for _, variant in list(picture_variants(image, rng, 8))[1:]]
    ct_held_out = only_non_mri(splits["test"])
    probes = {"non_mri_development": non_mri_images(seed=0), "non_mri_held_out": non_mri_images(seed=1, scale=2),
              **{f"non_brain_medical_{part}": [(source, image) for source, _, image in non_brain_medical_images(part)]
                 for part in ("development", "held_out")},
              "ct_development": [("collection CT, train split", image) for _, image in ct_development],
              "ct_held_out": [(f"collection CT, test split: {label}", image)
                              for label, image in zip(ct_held_out["label_id"], ct_held_out["image"])]}
    inputs = {"train": train["image"], "validation": validation["image"], "test": test["image"],
              **{name: [image for _, image in pairs] for name, pairs in probes.items()},
              "other_brain_mri": [other_brain_mri()]}
    embeddings, ct_looks = {}, {}
    for name, images in inputs.items():
        print(f"embedding {len(images)} {name} images ...", flush=True)
        embeddings[name] = cascade.run_models(images, 16)[1]
        ct_looks[name] = np.array([bone_rim(image).looks_like_ct for image in images], dtype=bool)
    development = {task: np.concatenate([embeddings[name][task] for name in
                                         ("non_mri_development", "non_brain_medical_development", "ct_development")])
                   for task in TASKS}
    ct_looking_mri = {task: np.concatenate([embeddings[name][task][ct_looks[name]] for name in ("train", "validation")])
                      for task in TASKS}
    check = fit_familiarity(embeddings["train"], embeddings["validation"], weights_sha256(models_dir), components,
                            other_embeddings=development, ct_looking_mri=ct_looking_mri)
    check.save(models_dir / "disease-detector" / FAMILIARITY_FILE)
    scores = {name: check.unfamiliarity(embeddings[name]) for name in inputs}
    refused = {name: refuses(scores[name], ct_looks[name], check.ct_floor) for name in inputs}
    groups = {"validation": np.asarray(validation["label_id"]), "test": np.asarray(test["label_id"]),
              **{name: np.array([group for group, _ in pairs]) for name, pairs in probes.items()}}
    report = {
        "method": f"the larger of two ratios over the 4 models' unit-length embeddings: the residual outside their top "
                  f"{check.components.shape[0]} principal components (training part) over the largest validation "
                  "residual, and P(not a brain MRI slice) of a logistic regression (training part against the "
                  "development non-MRI pictures, non-brain medical images and the train split's CT slices with "
                  "variants) over its limit, halfway in log-odds between the highest validation score and the lowest "
                  "development-picture score; refused above 1, or above the CT floor when the picture looks like CT "
                  "by its pixels (a saturated bone ring around a flat brain)",
        "training_images": len(train), "limit": check.limit, "other_limit": check.other_limit,
        "ct_floor": check.ct_floor,
        "ct_looking_mri_in_training_data": int(ct_looks["train"].sum() + ct_looks["validation"].sum()),
        **{name: _refused_share(refused[name], scores[name], groups[name]) for name in groups},
        "other_brain_mri": {"what": "matplotlib's sample MRI s1045.ima (sagittal head, another scanner)",
                            "unfamiliarity": float(scores["other_brain_mri"][0]),
                            "refused": bool(refused["other_brain_mri"][0])},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    for folder in (out_dir, models_dir / "disease-detector"):  # the detector's model card quotes it
        (folder / "familiarity.json").write_text(json.dumps(report, indent=2))
    unfamiliarity_histogram({"official test scans": scores["test"], "non-MRI, held out": scores["non_mri_held_out"],
                             "non-brain medical, held out": scores["non_brain_medical_held_out"],
                             "collection CT, held out": scores["ct_held_out"]},
                            out_dir / "unfamiliarity.png")
    return report
