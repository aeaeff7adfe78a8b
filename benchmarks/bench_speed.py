"""Speed of the shipped cascade against a seed-equivalent one, and against this machine's limit.

    python -m benchmarks.bench_speed              # prints the table, writes reports/speed.json

Measured in one run on the same images and threads: single-image latency, batched throughput, cold starts,
training seconds per epoch, FLOPs per image against the machine's matmul peak, and label agreement between the
optimised (ONNX Runtime) and unoptimised (PyTorch) cascades on the official test splits.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mri_cascade import Cascade, load_image
from mri_cascade.labels import TASKS
from mri_cascade.loading import Stage
from mri_cascade.torch_backend import TorchRunner

REPO = Path(__file__).resolve().parent.parent

BATCH_SIZES = (1, 8, 16, 32)
THROUGHPUT_TARGET_BATCH = 8


def sample_images(data: Path, count: int) -> list[Image.Image]:
    files = sorted(data.glob("*/test/*/*.jpg"))
    if files:
        step = max(1, len(files) // count)
        return [load_image(path) for path in files[::step][:count]]
    rng = np.random.default_rng(0)
    return [load_image(rng.integers(0, 255, (208, 176), dtype=np.uint8)) for _ in range(count)]


def latency_ms(cascade: Cascade, images: list, runs: int) -> dict[str, float]:
    cascade.predict(images[0])
    times = []
    for i in range(runs):
        start = time.perf_counter()
        cascade.predict(images[i % len(images)])
        times.append((time.perf_counter() - start) * 1000)
    return {"p50": statistics.median(times), "p95": float(np.percentile(times, 95))}


def heatmap_ms(cascade: Cascade, images: list, runs: int) -> dict[str, float]:
    """Extra time of the shipped heatmap (occlusion of the answer: every model on its path re-run on each window)
    after an answer."""
    answered = [(image, result) for image in images[:runs] if not (result := cascade.predict(image)).refused]
    cascade.explain(*answered[0])
    times = []
    for image, result in answered:
        start = time.perf_counter()
        cascade.explain(image, result)
        times.append((time.perf_counter() - start) * 1000)
    return {"p50": statistics.median(times), "p95": float(np.percentile(times, 95))}


def throughput(cascade: Cascade, images: list, batch_size: int) -> float:
    cascade.predict_batch(images[:batch_size], batch_size=batch_size)
    start = time.perf_counter()
    cascade.predict_batch(images, batch_size=batch_size)
    return len(images) / (time.perf_counter() - start)


def seed_equivalent_cascade() -> Cascade:
    """Four ResNet-50 classifiers at 240 px (random weights: only speed matters), run by the same Cascade code."""
    from transformers import EfficientNetImageProcessor, ResNetConfig, ResNetForImageClassification

    stages = {}
    for task in TASKS.values():
        id2label = dict(enumerate(task.classes))
        config = ResNetConfig(id2label=id2label, label2id={v: k for k, v in id2label.items()})  # ResNet-50 layout
        processor = EfficientNetImageProcessor(size={"height": 240, "width": 240}, do_center_crop=False, include_top=False)
        stages[task.name] = Stage(config, processor.to_dict(), TorchRunner(ResNetForImageClassification(config)),
                                  "resnet-50", "torch")
    return Cascade(stages)


def cascade_flops(cascade: Cascade) -> int:
    """FLOPs (2 per multiply-add) of one image through all four models, test-time flips included, counted on the
    PyTorch graphs."""
    from torch.utils.flop_counter import FlopCounterMode

    total = 0
    for stage in cascade.stages.values():
        size = stage.processor_settings["size"]
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            stage.logits_and_embedding(np.zeros((1, 3, size["height"], size["width"]), dtype=np.float32))
        total += counter.get_total_flops()
    return total


def matmul_peak_gflops(n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def cold_start_library(image: Path) -> float:
    code = (
        "from mri_cascade import Cascade; import sys; Cascade.from_pretrained().predict(sys.argv[1])"
    )
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, str(image)], check=True, cwd=REPO, capture_output=True)
    return time.perf_counter() - start


def cold_start_app(image: Path) -> float:
    from gradio_client import Client, handle_file

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False"}
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - start < 120:
            try:
                Client(f"http://127.0.0.1:{port}", verbose=False).predict(handle_file(str(image)), api_name="/classify")
                return time.perf_counter() - start
            except Exception:
                time.sleep(0.2)
        raise TimeoutError("the app did not answer within 120 s")
    finally:
        process.terminate()
        process.wait(timeout=30)


def training_seconds_per_epoch(steps: int = 6) -> dict[str, float]:
    """Time a few optimizer steps per task at the shipped model's image size and batch, scaled to one epoch."""
    from train.presets import parse_size, pretrained_preset

    figures = {}
    for task in TASKS.values():
        settings = json.loads((REPO / "models" / task.name / "training_args.json").read_text())
        train_images = json.loads((REPO / "models" / task.name / "validation_results.json").read_text())["train_images"]
        size, batch = settings["image_size"], settings["batch_size"]
        height, width = parse_size(size)
        model, _ = pretrained_preset(settings["base_model"], (height, width), dict(enumerate(task.classes)))
        model = model.to(memory_format=torch.channels_last).train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        pixels = torch.randn(batch, 3, height, width).contiguous(memory_format=torch.channels_last)
        labels = torch.randint(0, len(task.classes), (batch,))
        times = []
        for step in range(steps + 1):
            start = time.perf_counter()
            model(pixel_values=pixels, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if step:
                times.append(time.perf_counter() - start)
        figures[task.name] = statistics.median(times) * -(-train_images // batch)
    return figures


def agreement(optimised: Cascade, reference: Cascade, data: Path) -> dict:
    files = sorted(data.glob("*/test/*/*.jpg"))
    fast = [r.label for r in optimised.predict_batch(files)]
    slow = [r.label for r in reference.predict_batch(files)]
    same = sum(a == b for a, b in zip(fast, slow))
    return {"images": len(files), "identical_labels": same, "share": same / len(files)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "speed.json")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--skip-agreement", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    images = sample_images(args.data, args.images)
    example = Path(tempfile.gettempdir()) / "mri-cascade-benchmark-example.png"  # a real scan: never in the repo
    images[0].save(example)

    optimised = Cascade.from_pretrained()
    reference = Cascade.from_pretrained(backend="torch")
    for stage in reference.stages.values():  # the unoptimised path: each model's own image processor
        stage.resize_and_normalise = lambda batch, processor=stage.processor: processor(batch, return_tensors="np")[
            "pixel_values"]
    seed = seed_equivalent_cascade()
    backends = sorted({stage.backend for stage in optimised.stages.values()})
    result: dict = {"threads": torch.get_num_threads(), "images": len(images), "optimised_backend": backends}
    for name, cascade, runs in (("shipped", optimised, 100), ("shipped_torch", reference, 50), ("seed_equivalent", seed, 10)):
        result[name] = {
            "latency_ms": latency_ms(cascade, images, runs),
            "throughput_per_s": {str(b): throughput(cascade, images if name != "seed_equivalent" else images[:32], b)
                                 for b in BATCH_SIZES},
        }
        print(name, json.dumps(result[name]), flush=True)
    result["shipped"]["heatmap_ms"] = heatmap_ms(optimised, images, 30)
    print("heatmap", json.dumps(result["shipped"]["heatmap_ms"]), flush=True)
    best = max(result["shipped"]["throughput_per_s"].values())
    result["speedup_vs_seed"] = {
        "latency": result["seed_equivalent"]["latency_ms"]["p50"] / result["shipped"]["latency_ms"]["p50"],
        "throughput": best / max(result["seed_equivalent"]["throughput_per_s"].values()),
    }
    flops = cascade_flops(reference)
    peak = matmul_peak_gflops()
    result["compute"] = {
        "gflops_per_image": flops / 1e9,
        "seed_gflops_per_image": cascade_flops(seed) / 1e9,
        "achieved_gflops_per_s": flops * best / 1e9,
        "matmul_peak_gflops_per_s": peak,
        "share_of_peak": flops * best / 1e9 / peak,
    }
    result["cold_start_s"] = {"library": cold_start_library(example), "app": cold_start_app(example)}
    result["training_seconds_per_epoch"] = training_seconds_per_epoch()
    if not args.skip_agreement and args.data.is_dir():
        result["agreement_with_torch"] = agreement(optimised, reference, args.data)
    example.unlink()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print_table(result)


def print_table(r: dict) -> None:
    s, t, seed = r["shipped"], r["shipped_torch"], r["seed_equivalent"]
    rows = [
        ("single image p50 / p95 (ms)", f"{s['latency_ms']['p50']:.1f} / {s['latency_ms']['p95']:.1f}",
         f"{t['latency_ms']['p50']:.1f} / {t['latency_ms']['p95']:.1f}",
         f"{seed['latency_ms']['p50']:.0f} / {seed['latency_ms']['p95']:.0f}", "≤ 50 ms p50"),
        *[(f"predict_batch, batch {b} (images/s)", f"{s['throughput_per_s'][str(b)]:.1f}",
           f"{t['throughput_per_s'][str(b)]:.1f}", f"{seed['throughput_per_s'][str(b)]:.1f}",
           "≥ 100/s" if b == THROUGHPUT_TARGET_BATCH else "") for b in BATCH_SIZES],
    ]
    print(f"\n{'':<36}{'shipped (' + '+'.join(r['optimised_backend']) + ')':>22}{'shipped torch':>16}{'seed-equiv.':>14}  target")
    for name, a, b, c, target in rows:
        print(f"{name:<36}{a:>22}{b:>16}{c:>14}  {target}")
    print(f"speed-up vs seed-equivalent: latency {r['speedup_vs_seed']['latency']:.1f}x, "
          f"throughput {r['speedup_vs_seed']['throughput']:.1f}x (target ≥ 10x)")
    c = r["compute"]
    print(f"compute: {c['gflops_per_image']:.2f} GFLOP/image (seed {c['seed_gflops_per_image']:.1f}); "
          f"{c['achieved_gflops_per_s']:.1f} GFLOP/s achieved vs {c['matmul_peak_gflops_per_s']:.0f} matmul peak "
          f"({100 * c['share_of_peak']:.1f} %)")
    print(f"cold start to first answer: library {r['cold_start_s']['library']:.1f} s, app {r['cold_start_s']['app']:.1f} s"
          " (target ≤ 10 s)")
    print("training s/epoch: " + ", ".join(f"{k} {v:.0f}" for k, v in r["training_seconds_per_epoch"].items()))
    if "agreement_with_torch" in r:
        a = r["agreement_with_torch"]
        print(f"labels identical to the PyTorch cascade: {a['identical_labels']}/{a['images']} ({100 * a['share']:.2f} %)"
              " (target ≥ 99.5 %)")


if __name__ == "__main__":
    main()
