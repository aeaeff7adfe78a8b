"""Fine-tune the cascade's image classifiers with the transformers Trainer.

    python -m train.run_train --task all --model efficientnet-lite0 --output_dir models
    accelerate launch -m train.run_train --task tumor-type --model facebook/convnext-tiny-224 --output_dir out

Each task is exported in Hub layout to ``<output_dir>/<task>`` (config with id2label, model.safetensors,
preprocessor_config.json, README.md model card). Temperatures and the disease detector's operating points
need all four models, so they are fitted afterwards: ``mri-cascade calibrate`` (see ``train/ship.sh``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import albumentations as A
import numpy as np
import torch
import torch.nn.functional as F
from datasets import DatasetDict
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoModelForImageClassification,
    HfArgumentParser,
    TrainingArguments,
    set_seed,
)

from mri_cascade.images import crop_to_head, to_model_rgb
from mri_cascade.labels import FAMILIES, TASKS
from mri_cascade.loading import CROP_TO_HEAD_KEY
from mri_cascade.research.audit import fingerprint_dataset, near_duplicate_groups
from mri_cascade.research.cards import publish_model, render_model_card
from mri_cascade.research.data import (
    SPLIT_SEED,
    VALIDATION_FRACTION,
    canonical_order,
    carve_validation,
    cross_source_split,
    label_counts,
    load_sources,
    only_mri,
    task_dataset,
    true_families,
)
from mri_cascade.research.evaluation import audit_report, classification_metrics, modality_counts, print_audit
from mri_cascade.runtime import MAX_FILE_BYTES, WEIGHTS_INDEX_FILE
from mri_cascade.torch_backend import export_onnx
from train.presets import DINOV2_PRESET, PRESETS, parse_size, pretrained_preset
from train.regularisation import BatchMixer, MixingTrainer, WeightAverageCallback

logger = logging.getLogger(__name__)
DEFAULT_DATA = ("../shared/data/alzheimer", "../shared/data/brain_tumor", "../shared/data/br35h")
AUGMENTATIONS = ("standard", "robust", "multi-sequence")
VALIDATIONS = ("fold", "cross-source", "none")


@dataclass
class DataArguments:
    data: list[str] = field(
        default_factory=lambda: list(DEFAULT_DATA),
        metadata={"help": "Image-folder roots or Hub dataset ids "
                  "(Falah/Alzheimer_MRI, sartajbhuvaji/Brain-Tumor-Classification)."},
    )
    validation_fraction: float = field(
        default=VALIDATION_FRACTION, metadata={"help": "Share of train held out, by near-duplicate group."})
    validation_fold: int = field(
        default=0,
        metadata={"help": "Which of the round(1 / validation_fraction) grouped folds is held out. 0 is the split the "
                  "shipped models use (their calibration, operating points and refusal check are fitted on it); "
                  "train a recipe on other folds too to compare recipes on more held-out subjects."},
    )
    split_seed: int = field(
        default=SPLIT_SEED,
        metadata={"help": "Seed of the grouped folds. Kept apart from --seed so that a recipe can be retrained with "
                  "another seed on the same held-out subjects."},
    )
    validation: str = field(
        default="fold",
        metadata={"help": "'fold': a grouped fold of train (--validation_fold). 'cross-source': every scan from "
                  "outside its collection's main source (another image size), for classes learned from the main "
                  "source; measures transfer to other sources, as the tumor test split needs. 'none': train on all "
                  "of train, for a recipe whose schedule was chosen on folds (nothing is evaluated; calibrate with "
                  "the fold models, `mri-cascade calibrate --fold-models`)."},
    )
    families: str = field(
        default="",
        metadata={"help": "Train and validate on these scan families only ('alzheimer', 'tumor', comma-separated), "
                  "after the split, so the folds stay those of all the data. Empty: every scan."},
    )


@dataclass
class ModelArguments:
    task: str = field(default="all", metadata={"help": f"'all', or one or more of {', '.join(TASKS)}, comma-separated."})
    model: str = field(
        default="facebook/convnext-tiny-224",
        metadata={"help": f"Hub id or local dir of a pretrained image classifier, or an offline preset: {', '.join(PRESETS)}."},
    )
    image_size: str = field(
        default="224",
        metadata={"help": "Input size in pixels: '224' (square) or HEIGHTxWIDTH, e.g. '208x176' (native Alzheimer slices)."},
    )
    augmentation: str = field(default="standard", metadata={"help": f"Training augmentation: {' or '.join(AUGMENTATIONS)}."})
    crop_to_head: bool = field(
        default=False,
        metadata={"help": "Crop every slice to the head before resizing, in training and (through the saved config) "
                  "in the cascade, so that sources framing the head differently look alike."},
    )
    trainable_blocks: int = field(
        default=-1,
        metadata={"help": f"{DINOV2_PRESET} only: fine-tune the last N transformer blocks, the final norm and the "
                  "head, the patch embedding and earlier blocks frozen (0: a frozen backbone); -1: every weight."},
    )


@dataclass
class RegularisationArguments:
    """timm's fine-tuning regularisers (off by default; the shipped models were trained without them)."""

    mixup_alpha: float = field(default=0.0, metadata={"help": "Beta(a, a) pixel-blend mixup of each batch; 0: off."})
    cutmix_alpha: float = field(
        default=0.0, metadata={"help": "Beta(a, a) cutmix; with mixup too, each batch gets one or the other. 0: off."}
    )
    ema_decay: float = field(
        default=0.0,
        metadata={"help": "Keep an EMA of the weights (e.g. 0.998); evaluation, best-epoch choice and the export "
                  "use it. 0: off."},
    )


class IntensityRemap(A.ImageOnlyTransform):
    """Map grey levels through a random curve that keeps the background black: knots at fixed input levels take
    random output levels, not necessarily in order, so dark fluid can turn bright as from T1 to T2 or FLAIR, and
    tissue contrasts swap. Trained with it, a model cannot take one sequence's contrast for the disease."""

    KNOTS = (0, 16, 60, 110, 160, 210, 255)  # input grey levels; 0 and 16 stay black-ish (the background)

    def get_params(self) -> dict:
        outputs = self.random_generator.uniform(0, 255, len(self.KNOTS))
        outputs[:2] = (0, self.random_generator.uniform(0, 24))
        return {"curve": np.interp(np.arange(256), self.KNOTS, outputs).astype(np.uint8)}

    def apply(self, img: np.ndarray, curve: np.ndarray, **params) -> np.ndarray:
        return curve[img]


def build_augmentation(strength: str = "standard", seed: int | None = None) -> A.Compose:
    """'standard': light affine and intensity jitter (the shipped Alzheimer-vs-tumor and severity models). 'robust' widens
    them and adds what tells one source's scans from another's (resolution, blur, sharpening, JPEG quality,
    gamma, local contrast), so that a class cannot be recognised by the look of the source it came from.
    'multi-sequence' is 'robust' plus what other scanners and sequences do: grey-level curves that span T1, T2
    and FLAIR looks (``IntensityRemap``), and a field of view from a quarter of black border on each side to a
    tighter crop. Albumentations draws from its own generator, which ``set_seed`` does not reach: ``seed`` seeds it,
    so that a run repeats with the same ``--seed``."""
    if strength not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {strength!r}; expected one of {', '.join(AUGMENTATIONS)}")
    multi_sequence = strength == "multi-sequence"
    if strength == "standard":
        transforms = [
            A.HorizontalFlip(p=0.5),
            A.Affine(rotate=(-10, 10), scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), p=0.7),
            A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=0.5),
            A.GaussNoise(p=0.25),
        ]
    else:
        transforms = [
            A.HorizontalFlip(p=0.5),
            A.Affine(rotate=(-15, 15), scale=(0.65, 1.2) if multi_sequence else (0.8, 1.2),
                     translate_percent=(-0.08, 0.08), p=0.8),
            *([IntensityRemap(p=0.4)] if multi_sequence else []),
            A.OneOf([A.Downscale(scale_range=(0.3, 0.7)), A.GaussianBlur(sigma_limit=(0.3, 1.5)), A.Sharpen()],
                    p=0.5),
            A.ImageCompression(quality_range=(30, 95), p=0.5),
            A.RandomGamma(gamma_limit=(70, 150), p=0.5),
            A.RandomBrightnessContrast(brightness_limit=0.25, contrast_limit=0.25, p=0.7),
            A.CLAHE(p=0.2),
            A.GaussNoise(p=0.25),
        ]
    return A.Compose(transforms, seed=seed)


def resizer(size: tuple[int, int], crop: bool = False):
    """Greyscale-replicate, optionally crop to the head, and resize once, up front, the way the cascade will."""
    height, width = size

    def resize(batch: dict) -> dict:
        images = [to_model_rgb(im) for im in batch["image"]]
        return {"image": [(crop_to_head(im) if crop else im).resize((width, height), Image.BICUBIC) for im in images]}

    return resize


def pixel_transform(processor, augment: A.Compose | None = None):
    """The lazy ``set_transform``: optional augmentation, then the model's own image processor."""

    def transform(batch: dict) -> dict:
        images = batch["image"] if augment is None else [augment(image=np.asarray(im))["image"] for im in batch["image"]]
        batch["pixel_values"] = processor(images, return_tensors="np")["pixel_values"]
        return batch

    return transform


def save_weights(model, folder: Path, max_shard_size: int = MAX_FILE_BYTES) -> None:
    """Save ``model`` into ``folder``, in shards above ``max_shard_size`` (a ViT-S is 88 MB). An earlier save's
    weights are removed first: transformers leaves a single ``model.safetensors`` beside new shards (and an index
    beside a new single file), and the single file would then be the one loaded."""
    for stale in [*folder.glob("model*.safetensors"), folder / WEIGHTS_INDEX_FILE]:
        stale.unlink(missing_ok=True)
    model.save_pretrained(str(folder), max_shard_size=max_shard_size)


def load_backbone(model_args: ModelArguments, image_size: tuple[int, int], classes: tuple[str, ...]):
    id2label = dict(enumerate(classes))
    if model_args.trainable_blocks >= 0 and model_args.model != DINOV2_PRESET:
        raise ValueError(f"--trainable_blocks applies to {DINOV2_PRESET} only")
    if model_args.model in PRESETS:
        model, processor = pretrained_preset(model_args.model, image_size, id2label)
        if model_args.trainable_blocks >= 0:
            frozen = [model.dinov2.embeddings, *model.dinov2.encoder.layer[: len(model.dinov2.encoder.layer)
                                                                            - model_args.trainable_blocks]]
            for module in frozen:
                module.requires_grad_(False)
        return model, processor
    processor = AutoImageProcessor.from_pretrained(model_args.model)
    processor.size = {"height": image_size[0], "width": image_size[1]}
    if getattr(processor, "do_center_crop", False):
        processor.do_center_crop = False
    model = AutoModelForImageClassification.from_pretrained(
        model_args.model,
        id2label=id2label,
        label2id={label: index for index, label in id2label.items()},
        ignore_mismatched_sizes=True,
        use_safetensors=True,
    )
    return model, processor


def class_weighted_loss(label_counts_per_class: list[int], label_smoothing: float = 0.0):
    """Cross-entropy weighted by 1/sqrt(class frequency), normalised to mean 1 over samples, with optional
    label smoothing (the Trainer's own ``label_smoothing_factor`` does not reach a custom loss). ``labels`` are
    class indices, or soft targets (one row per image) when batches are mixed."""
    counts = torch.tensor(label_counts_per_class, dtype=torch.float)
    weights = counts.clamp(min=1).rsqrt()
    weights = weights / (weights * counts).sum() * counts.sum()

    def loss(outputs, labels, num_items_in_batch=None):
        return F.cross_entropy(outputs["logits"], labels, weight=weights.to(outputs["logits"].device),
                               label_smoothing=label_smoothing)

    return loss


def collate(batch: list[dict]) -> dict[str, torch.Tensor]:
    pixel_values = torch.stack([torch.as_tensor(example["pixel_values"]) for example in batch])
    return {
        "pixel_values": pixel_values.contiguous(memory_format=torch.channels_last),
        "labels": torch.tensor([example["label"] for example in batch]),
    }


def main() -> None:
    parser = HfArgumentParser((DataArguments, ModelArguments, RegularisationArguments, TrainingArguments))
    data_args, model_args, regularisation, training_args = parser.parse_args_into_dataclasses()
    if data_args.validation not in VALIDATIONS:
        parser.error(f"--validation must be one of {', '.join(VALIDATIONS)}")
    evaluates = data_args.validation != "none"
    if not evaluates and (training_args.eval_strategy != "no" or training_args.load_best_model_at_end):
        parser.error("--validation none leaves nothing to evaluate on: drop --eval_strategy and "
                     "--load_best_model_at_end (the last epoch is kept)")
    if model_args.augmentation not in AUGMENTATIONS:
        parser.error(f"--augmentation must be one of {', '.join(AUGMENTATIONS)}")
    if regularisation.mixup_alpha < 0 or regularisation.cutmix_alpha < 0 or not 0 <= regularisation.ema_decay < 1:
        parser.error("--mixup_alpha and --cutmix_alpha must be >= 0 and --ema_decay in [0, 1)")
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    push_namespace = training_args.hub_model_id if training_args.push_to_hub else None
    training_args.push_to_hub = False  # each task is pushed to its own repo once exported, below
    set_seed(training_args.seed)
    output_root = Path(training_args.output_dir)
    output_root.mkdir(parents=True, exist_ok=True)

    everything = load_sources(data_args.data, non_mri=True)  # MRI only from here on
    sources = DatasetDict({split: only_mri(dataset) for split, dataset in everything.items()})
    train_prints = fingerprint_dataset(sources["train"])
    audit = audit_report(sources, train_prints, fingerprint_dataset(sources["test"]), modality_counts(everything))
    print_audit(audit)
    (output_root / "data_audit.json").write_text(json.dumps(audit, indent=2))
    if data_args.validation == "fold":
        train_all, validation_all = carve_validation(
            sources["train"], data_args.validation_fraction, data_args.split_seed, train_prints.thumbnails,
            data_args.validation_fold,
        )
    elif data_args.validation == "cross-source":
        train_all, validation_all = cross_source_split(
            sources["train"], train_prints.sizes, near_duplicate_groups(train_prints.thumbnails)
        )
    else:
        train_all, validation_all = sources["train"], None
    if data_args.families:
        keep = set(data_args.families.split(","))
        if not keep <= set(FAMILIES):
            parser.error(f"unknown families {', '.join(sorted(keep - set(FAMILIES)))}; expected {', '.join(FAMILIES)}")

        def of_families(split):
            return split.select(np.flatnonzero(np.isin(true_families(split), list(keep))))

        train_all = of_families(train_all)
        validation_all = of_families(validation_all) if evaluates else None
    logger.info("train %s / validation %s", label_counts(train_all),
                label_counts(validation_all) if evaluates else "none held out")

    tasks = list(TASKS) if model_args.task == "all" else model_args.task.split(",")
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        parser.error(f"unknown task(s) {', '.join(unknown)}; expected 'all' or {', '.join(TASKS)}")
    validation_labels = set(validation_all["label_id"]) if evaluates else set()
    empty = [name for name in tasks if not validation_labels & set(TASKS[name].class_of)]
    if evaluates and empty:
        parser.error(f"no validation scans for {', '.join(empty)} with --validation {data_args.validation}")
    image_size = parse_size(model_args.image_size)
    for task_name in tasks:
        task = TASKS[task_name]
        started = time.time()
        resize = resizer(image_size, model_args.crop_to_head)
        train_ds = task_dataset(train_all, task).map(resize, batched=True, desc=f"{task_name}: resize train")
        model, processor = load_backbone(model_args, image_size, task.classes)
        model = model.to(memory_format=torch.channels_last)
        train_ds.set_transform(pixel_transform(processor, build_augmentation(model_args.augmentation, training_args.seed)))
        validation_ds = None
        if evaluates:
            validation_ds = task_dataset(validation_all, task).map(resize, batched=True,
                                                                   desc=f"{task_name}: resize validation")
            validation_ds.set_transform(pixel_transform(processor))
        counts = [train_ds["label"].count(i) for i in range(len(task.classes))]
        task_args = dataclasses.replace(
            training_args, output_dir=str(output_root / "checkpoints" / task_name), remove_unused_columns=False
        )
        mixer = None
        if regularisation.mixup_alpha > 0 or regularisation.cutmix_alpha > 0:
            mixer = BatchMixer(len(task.classes), regularisation.mixup_alpha, regularisation.cutmix_alpha,
                               training_args.seed)
        trainer = MixingTrainer(
            model=model,
            mixer=mixer,
            callbacks=[WeightAverageCallback(regularisation.ema_decay)] if regularisation.ema_decay > 0 else None,
            args=task_args,
            train_dataset=train_ds,
            eval_dataset=validation_ds,
            data_collator=collate,
            compute_metrics=lambda p: classification_metrics(p.label_ids, p.predictions),
            compute_loss_func=class_weighted_loss(counts, training_args.label_smoothing_factor),
        )
        trainer.train()
        metrics = {}
        if evaluates:
            prediction = trainer.predict(validation_ds)
            metrics = classification_metrics(prediction.label_ids, prediction.predictions)
        metrics["training_minutes"] = round((time.time() - started) / 60, 1)
        metrics["train_images"] = len(train_ds)
        metrics["validation_images"] = len(validation_ds) if evaluates else 0
        export_dir = output_root / task_name
        trainer.model.to(memory_format=torch.contiguous_format)
        if model_args.crop_to_head:
            setattr(trainer.model.config, CROP_TO_HEAD_KEY, True)
        save_weights(trainer.model, export_dir)
        processor.save_pretrained(str(export_dir))
        (export_dir / "validation_results.json").write_text(json.dumps(metrics, indent=2))
        (export_dir / "training_args.json").write_text(
            json.dumps({"base_model": model_args.model, "image_size": "x".join(map(str, image_size)),
                        "label_smoothing": training_args.label_smoothing_factor,
                        "best_metric": training_args.metric_for_best_model,
                        "epochs": training_args.num_train_epochs,
                        "learning_rate": training_args.learning_rate,
                        "batch_size": training_args.per_device_train_batch_size,
                        "seed": training_args.seed, "data": canonical_order(data_args.data),
                        "split_seed": data_args.split_seed,
                        "validation_fraction": data_args.validation_fraction,
                        "validation": data_args.validation,
                        "validation_fold": data_args.validation_fold,
                        "augmentation": model_args.augmentation,
                        "crop_to_head": model_args.crop_to_head,
                        "trainable_blocks": model_args.trainable_blocks,
                        "families": data_args.families or ",".join(FAMILIES),
                        **dataclasses.asdict(regularisation)}, indent=2)
        )
        (export_dir / "training_args.bin").unlink(missing_ok=True)
        export_onnx(export_dir)
        render_model_card(export_dir)
        logger.info("%s: validation %s", task_name, json.dumps(metrics))
        if push_namespace:
            publish_model(export_dir, push_namespace)
        del trainer, model
    logger.info("done: %s", ", ".join(tasks))


if __name__ == "__main__":
    main()
