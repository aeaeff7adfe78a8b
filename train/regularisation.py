"""timm-style regularisers for the Trainer: batch mixup/cutmix and an exponential moving average of the weights.

timm and torchvision (whose ``v2.MixUp``/``v2.CutMix`` would serve) cannot be imported here, so the mixing is
the few lines timm's ``Mixup`` runs per batch. The average uses torch's own ``AveragedModel``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel
from transformers import Trainer, TrainerCallback


class BatchMixer:
    """Mix each training batch with itself reversed: mixup (pixel blend) or cutmix (pasted box), one per batch.

    Labels become soft targets: ``lam`` of the image's class and ``1 - lam`` of its partner's, where for cutmix
    ``lam`` is the share of the image that stayed its own.
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, seed: int = 0):
        if mixup_alpha <= 0 and cutmix_alpha <= 0:
            raise ValueError("BatchMixer needs mixup_alpha > 0 or cutmix_alpha > 0")
        self.num_classes = num_classes
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.rng = np.random.default_rng(seed)

    def __call__(self, pixel_values: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        use_cutmix = self.cutmix_alpha > 0 and (self.mixup_alpha <= 0 or self.rng.random() < 0.5)
        partner = pixel_values.flip(0)
        if use_cutmix:
            lam = float(self.rng.beta(self.cutmix_alpha, self.cutmix_alpha))
            height, width = pixel_values.shape[-2:]
            cut = (1 - lam) ** 0.5
            box_h, box_w = int(height * cut), int(width * cut)
            top = int(self.rng.random() * (height - box_h + 1))
            left = int(self.rng.random() * (width - box_w + 1))
            mixed = pixel_values.clone()
            mixed[..., top : top + box_h, left : left + box_w] = partner[..., top : top + box_h, left : left + box_w]
            lam = 1 - box_h * box_w / (height * width)
        else:
            lam = float(self.rng.beta(self.mixup_alpha, self.mixup_alpha))
            mixed = lam * pixel_values + (1 - lam) * partner
        one_hot = torch.nn.functional.one_hot(labels, self.num_classes).to(pixel_values.dtype)
        return mixed, lam * one_hot + (1 - lam) * one_hot.flip(0)


class MixingTrainer(Trainer):
    """A Trainer that mixes training batches (never evaluation ones) before the forward pass."""

    def __init__(self, *args, mixer: BatchMixer | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.mixer = mixer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.mixer is not None and model.training:
            pixel_values, labels = self.mixer(inputs["pixel_values"], inputs["labels"])
            inputs = {**inputs, "pixel_values": pixel_values, "labels": labels}
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def ema_with_warmup(decay: float):
    """EMA step whose decay ramps up as (1 + n) / (10 + n), so early averages are not dominated by the
    pretrained starting weights and the random head."""

    def average(averaged: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor) -> torch.Tensor:
        step_decay = torch.clamp((1 + num_averaged) / (10 + num_averaged), max=decay)
        return averaged + (current - averaged) * (1 - step_decay)

    return average


class WeightAverageCallback(TrainerCallback):
    """Keep an EMA of the weights (BatchNorm statistics included) and let the Trainer see it at each epoch's end.

    From ``on_epoch_end`` to the next ``on_epoch_begin`` the model holds the averaged weights, so the epoch's
    evaluation, its checkpoint and ``load_best_model_at_end`` all use them; training resumes from the raw weights.
    This assumes ``--eval_strategy epoch``: evaluations in mid-epoch (``steps``) would see the raw weights.
    When training ends the model keeps the averaged (or best averaged) weights.
    """

    def __init__(self, decay: float):
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.average: AveragedModel | None = None
        self.raw_state: dict[str, torch.Tensor] | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.average = AveragedModel(model, avg_fn=ema_with_warmup(self.decay), use_buffers=True)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.average.update_parameters(model)

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        self.raw_state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
        model.load_state_dict(self.average.module.state_dict())

    def on_epoch_begin(self, args, state, control, model=None, **kwargs):
        if self.raw_state is not None:
            model.load_state_dict(self.raw_state)
            self.raw_state = None
