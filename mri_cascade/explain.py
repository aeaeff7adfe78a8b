"""Where the answer's evidence lies: occlusion-sensitivity heatmaps over the scan, and Grad-CAM for comparison.

The shipped heatmap is occlusion sensitivity (Zeiler and Fergus, 2014): windows of the head are painted over with
the head's median grey, one at a time, and each pixel's heat is how much the answer's probability falls, on
average, when a window covering it is painted over. It is measured against tumors with known boxes by
``research.explanation_benchmark``, where Grad-CAM of the deciding model rarely pointed at the tumor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch

OVERLAY_STRENGTH = 0.6  # how much colour the hottest pixels take; cold pixels show the scan unchanged
MAX_DISPLAY_SIDE = 1024  # larger pictures are explained on a copy this long: a heatmap is coarse anyway


@dataclass
class Explanation:
    method: str  # one of EXPLANATION_METHODS
    stage: str  # the last model on the answer's path, e.g. "tumor-type"
    target: str  # its class, the answer: occlusion shows the evidence for the answer, Grad-CAM for that class
    heatmap: np.ndarray  # (height, width) float32 in [0, 1], the image's size (long side at most 1024); 1 = strongest
    overlay: Image.Image  # the scan in grey with the heatmap blended over it in colour


VISION_TRANSFORMERS = ("dinov2", "vit")
"""Model types explained on their last patch tokens (``token_grad_cam``), with the class token first."""


def feature_layer(model: torch.nn.Module) -> torch.nn.Module:
    """The layer whose activations Grad-CAM weighs: the last feature map before pooling.

    EfficientNet's is the activation after its top convolution; for other architectures, the last 2-D
    convolution."""
    import torch

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
    import torch
    from captum.attr import LayerAttribution, LayerGradCam

    model.eval()
    pixels = torch.from_numpy(np.ascontiguousarray(pixel_values, dtype=np.float32))
    if model.config.model_type in VISION_TRANSFORMERS:
        attributions = token_grad_cam(model, pixels, target_index)
    else:
        cam = LayerGradCam(lambda inputs: model(pixel_values=inputs).logits, feature_layer(model))
        attributions = cam.attribute(pixels, target=target_index, relu_attributions=True)
    maps = LayerAttribution.interpolate(attributions, tuple(pixels.shape[-2:]), "bilinear")[:, 0]
    maps = maps.detach().clamp(min=0).numpy()
    peaks = maps.reshape(len(maps), -1).max(axis=1).reshape(-1, 1, 1)
    return np.divide(maps, peaks, out=np.zeros_like(maps), where=peaks > 0).astype(np.float32)


def token_grad_cam(model: torch.nn.Module, pixels: torch.Tensor, target_index: int) -> torch.Tensor:
    """Grad-CAM of a vision transformer (DINOv2, ViT) on its last patch tokens, the ones its head reads, laid out
    on the patch grid: (N, 1, H / patch, W / patch). A ViT has no last feature map; its only convolution is the
    patch embedding, where Grad-CAM would show pixel detail rather than evidence. A head on the mean of the tokens
    gives every token the same gradient, so for DINOv2 this is the class activation map of its patch tokens."""
    captured = []

    def keep(_module, _inputs, output):
        output.retain_grad()
        captured.append(output)

    handle = model.base_model.layernorm.register_forward_hook(keep)
    try:
        model(pixel_values=pixels).logits[:, target_index].sum().backward()
    finally:
        handle.remove()
    (tokens,) = captured
    patch = model.config.patch_size
    rows, columns = pixels.shape[-2] // patch, pixels.shape[-1] // patch
    patches, gradients = tokens[:, -rows * columns:], tokens.grad[:, -rows * columns:]  # after the class token
    maps = (gradients.mean(dim=1, keepdim=True) * patches).sum(dim=-1).clamp(min=0)
    return maps.reshape(len(pixels), 1, rows, columns)


EXPLANATION_METHODS = ("occlusion", "grad-cam")
DEFAULT_EXPLANATION = "occlusion"
"""The heatmap the Space shows (chosen on ``research.explanation_benchmark``)."""
OCCLUSION_WINDOW = 0.25
"""Side of an occluding window, as a share of the side of the head's crop (what the models read)."""
OCCLUSION_LEVELS = ((0.4, 0.2, 0), (0.2, 0.1, 2))
"""(window side, step, windows refined) per level, as shares of the side of the head's crop: windows a quarter of the
side tiling it, then windows an eighth of the side at a sixteenth's step inside the 2 quarter windows whose occlusion
lowered the score most (16 + 18 model runs)."""
OCCLUSION_MAP_SIDE = 64
"""The occlusion map's resolution over the head's crop."""


def occluded_batches(inputs: dict[str, np.ndarray], fills: dict[str, np.ndarray], heads: dict[str, np.ndarray],
                     windows: list[tuple[float, ...]]) -> dict[str, np.ndarray]:
    """Per model, one copy of its input ((1, 3, H, W)) per window, with the head's pixels inside that window set to
    the model's ``fills`` value (the head's median grey, normalised as the model normalises): the lesion, if the
    window holds one, is painted over with ordinary tissue, and the background stays black."""
    batches = {}
    for task, pixels in inputs.items():
        height, width = pixels.shape[-2:]
        batch = np.repeat(pixels, len(windows), axis=0)
        for index, (top, left, bottom, right) in enumerate(windows):
            rows = slice(round(top * height), round(bottom * height))
            columns = slice(round(left * width), round(right * width))
            inside = heads[task][rows, columns]
            batch[index, :, rows, columns] = np.where(inside, fills[task][:, None, None], batch[index, :, rows, columns])
        batches[task] = batch
    return batches


def occlusion_map(scores: np.ndarray, base_score: float, windows: list[tuple[float, ...]],
                  side: int = OCCLUSION_MAP_SIDE) -> np.ndarray:
    """The map over the crop from each window's score with it occluded: every cell gets the mean drop from
    ``base_score`` over the windows covering it, negative drops (occluding raised the score) count as 0; scaled to
    peak 1 (all zeros when no window lowers the score)."""
    drops = np.zeros((side, side))
    coverage = np.zeros((side, side))
    for score, (top, left, bottom, right) in zip(scores, windows):
        rows = slice(round(top * side), round(bottom * side))
        columns = slice(round(left * side), round(right * side))
        drops[rows, columns] += max(base_score - float(score), 0.0)
        coverage[rows, columns] += 1
    heatmap = drops / np.maximum(coverage, 1)
    peak = heatmap.max()
    return (heatmap / peak if peak > 0 else heatmap).astype(np.float32)


def two_level_occlusion(score: Callable[[list[tuple[float, ...]]], np.ndarray], base_score: float,
                        levels: tuple = OCCLUSION_LEVELS) -> np.ndarray:
    """Occlusion coarse to fine (``OCCLUSION_LEVELS``): ``score`` maps a list of windows (top, left, bottom, right) to
    the score with each occluded. The map is the sum of the levels' maps (``occlusion_map``), each scaled to peak 1,
    scaled to peak 1: the coarse level says where the evidence is, the fine one sharpens it there."""
    (coarse_side, coarse_step, _), (fine_side, fine_step, refined) = levels
    starts = np.arange(0.0, 1.0 - coarse_side + 1e-9, coarse_step)
    coarse = [(top, left, top + coarse_side, left + coarse_side) for top in starts for left in starts]
    coarse_scores = score(coarse)
    offsets = np.arange(0.0, coarse_side - fine_side + 1e-9, fine_step)
    fine = [(top + dy, left + dx, top + dy + fine_side, left + dx + fine_side)
            for top, left, _, _ in (coarse[index] for index in np.argsort(coarse_scores)[:refined])
            for dy in offsets for dx in offsets]
    heatmap = occlusion_map(coarse_scores, base_score, coarse) + occlusion_map(score(fine), base_score, fine)
    peak = heatmap.max()
    return heatmap / peak if peak > 0 else heatmap


def display_size(image: Image.Image) -> Image.Image:
    """``image``, or a copy shrunk to ``MAX_DISPLAY_SIDE`` on its long side when larger."""
    if max(image.size) <= MAX_DISPLAY_SIDE:
        return image
    scale = MAX_DISPLAY_SIDE / max(image.size)
    return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))


def uncrop(heatmap: np.ndarray, box: tuple[int, int, int, int], image: Image.Image, shown: Image.Image) -> np.ndarray:
    """A heatmap of the crop ``box`` of ``image`` (which may reach past its edges) as a map over ``shown``, a
    copy of ``image`` at display size: the map stretched over the box, zero outside it."""
    scale_x, scale_y = shown.width / image.width, shown.height / image.height
    left, top = round(box[0] * scale_x), round(box[1] * scale_y)
    right, bottom = max(left + 1, round(box[2] * scale_x)), max(top + 1, round(box[3] * scale_y))
    stretched = np.asarray(Image.fromarray(heatmap.astype(np.float32), mode="F")
                           .resize((right - left, bottom - top), Image.Resampling.BILINEAR))
    canvas = np.zeros((shown.height, shown.width), dtype=np.float32)
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(right, shown.width), min(bottom, shown.height)
    if x1 > x0 and y1 > y0:
        canvas[y0:y1, x0:x1] = stretched[y0 - top : y1 - top, x0 - left : x1 - left]
    return canvas


def overlay_heatmap(image: Image.Image, heatmap: np.ndarray) -> tuple[np.ndarray, Image.Image]:
    """A model-input-sized ``heatmap`` stretched to ``image`` (as the processor stretched the image to the
    model's input) with its peak scaled back to 1, and ``image`` in grey with it blended over in the 'inferno'
    colour map, weighted by the heatmap so that cold areas show the scan as it is."""
    from matplotlib import colormaps

    resized = Image.fromarray(heatmap.astype(np.float32), mode="F").resize(image.size, Image.Resampling.BILINEAR)
    stretched = np.clip(np.asarray(resized, dtype=np.float32), 0.0, None)
    peak = stretched.max()
    if peak > 0:
        stretched /= peak
    grey = np.asarray(image.convert("L"), dtype=np.float32)[..., None]
    colour = colormaps["inferno"](stretched, bytes=True)[..., :3]
    weight = OVERLAY_STRENGTH * stretched[..., None]
    blended = (1 - weight) * grey + weight * colour
    return stretched, Image.fromarray(blended.round().astype(np.uint8), mode="RGB")
