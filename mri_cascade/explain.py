"""Where a model looked: Grad-CAM heatmaps (captum's ``LayerGradCam``) over the scan."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

OVERLAY_STRENGTH = 0.6  # how much colour the hottest pixels take; cold pixels show the scan unchanged


@dataclass
class Explanation:
    stage: str  # the task whose decision is explained, e.g. "tumor-type"
    target: str  # the class of that model whose evidence the heatmap shows, e.g. "glioma"
    heatmap: np.ndarray  # (height, width) float32 in [0, 1], the input image's size; 1 = strongest evidence
    overlay: Image.Image  # the scan in grey with the heatmap blended over it in colour


def feature_layer(model: torch.nn.Module) -> torch.nn.Module:
    """The layer whose activations Grad-CAM weighs: the last feature map before pooling.

    EfficientNet's is the activation after its top convolution; for other architectures, the last 2-D
    convolution."""
    encoder = getattr(model.base_model, "encoder", None)
    if encoder is not None and hasattr(encoder, "top_activation"):
        return encoder.top_activation
    convolutions = [module for module in model.modules() if isinstance(module, torch.nn.Conv2d)]
    if not convolutions:
        raise ValueError(f"{type(model).__name__} has no convolution for Grad-CAM")
    return convolutions[-1]


def grad_cam(model: torch.nn.Module, pixel_values: np.ndarray, target_index: int) -> np.ndarray:
    """Grad-CAM for class ``target_index``: (N, H, W) maps at the model input's size, each scaled to [0, 1]
    (all zeros where no activation raises the class score)."""
    from captum.attr import LayerAttribution, LayerGradCam

    model.eval()
    cam = LayerGradCam(lambda pixels: model(pixel_values=pixels).logits, feature_layer(model))
    pixels = torch.from_numpy(np.ascontiguousarray(pixel_values, dtype=np.float32))
    attributions = cam.attribute(pixels, target=target_index, relu_attributions=True)
    maps = LayerAttribution.interpolate(attributions, tuple(pixels.shape[-2:]), "bilinear")[:, 0]
    maps = maps.detach().clamp(min=0).numpy()
    peaks = maps.reshape(len(maps), -1).max(axis=1).reshape(-1, 1, 1)
    return np.divide(maps, peaks, out=np.zeros_like(maps), where=peaks > 0).astype(np.float32)


def overlay_heatmap(image: Image.Image, heatmap: np.ndarray) -> Image.Image:
    """``image`` in grey with ``heatmap`` (same size as ``image``, in [0, 1]) blended over it with the
    'inferno' colour map, weighted by the heatmap so that cold areas show the scan as it is."""
    from matplotlib import colormaps

    grey = np.asarray(image.convert("L"), dtype=np.float32)[..., None] / 255.0
    colour = colormaps["inferno"](heatmap)[..., :3].astype(np.float32)
    weight = OVERLAY_STRENGTH * heatmap[..., None]
    blended = (1 - weight) * grey + weight * colour
    return Image.fromarray((255 * blended).round().astype(np.uint8), mode="RGB")


def resize_heatmap(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A model-input-sized heatmap stretched to an image of ``size`` (width, height), as the processor
    stretched the image to the model's input, its peak scaled back to 1."""
    resized = Image.fromarray(heatmap.astype(np.float32), mode="F").resize(size, Image.Resampling.BILINEAR)
    resized = np.clip(np.asarray(resized, dtype=np.float32), 0.0, None)
    peak = resized.max()
    return resized / peak if peak > 0 else resized
