"""Analysis reading real JPEGs through DataLoader workers against the forward pass on pre-decoded tensors.

``vit_tiny_patch16_224`` (random weights) at 224 px on ``--images`` real JPEGs (the CIFAR-10
test images of ``../shared/data/cifar10-jpeg`` when present, else Fashion-MNIST images this
script writes as JPEGs), resized by the model's evaluation transform:

    forward   the plain forward pass over the same images, already decoded into one tensor
              (timm's fused attention; and with attention computed explicitly, as the
              analysis must and as benchmarks/bench_analysis.py's baseline does);
    analysis  ``measure_attention`` with the globality metrics, decoding the files with
              ``--workers`` DataLoader workers (and with 0 workers, for comparison).

Target: analysis / forward >= 0.8x. Wall clock (workers are other processes), torch on
``--threads`` threads, interleaved rounds; ratios of the medians and of the best rounds (the
best round is the least disturbed by whatever else the machine runs).
Run: ``.venv/bin/python benchmarks/bench_workers.py``.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from bench_stream import image_folder
from timing import attention_fused

import attnlab
from attnlab.spec import InputSpec
from attnlab.studies import GLOBALITY_METRICS
from attnlab.studies.inputs import ImageSelection

SPEC = InputSpec(size=(224, 224), channels=3, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                 interpolation="bicubic", crop_pct=1.0)


def jpeg_folder(n: int) -> dict:
    """Where the JPEGs are (bench_stream's folder: the shared CIFAR-10 JPEGs, else written ones),
    as measure_attention's dataset arguments."""
    root, _ = image_folder(n_train=0, n_test=n)
    return {"dataset": "imagefolder", "data_dir": str(root), "split": "test"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = jpeg_folder(args.images)
    torch.manual_seed(0)
    model = attnlab.create_model("vit_tiny_patch16_224", num_classes=10).eval()
    x, _ = ImageSelection(num_images=args.images, **data).stacked(SPEC)
    print(f"torch {torch.__version__}, {args.threads} thread(s), wall clock; {len(x)} JPEGs from {data['data_dir']}")

    def forward(fused: bool = True) -> float:
        t = time.perf_counter()
        with torch.inference_mode(), attention_fused(model, fused):
            for i in range(0, len(x), args.batch_size):
                model(x[i:i + args.batch_size])
        return time.perf_counter() - t

    def analysis(workers: int) -> float:
        t = time.perf_counter()
        attnlab.measure_attention([model], ["ViT-Ti"], num_images=args.images, metrics=GLOBALITY_METRICS,
                                  input_spec=SPEC, batch_size=args.batch_size, device="cpu", workers=workers, **data)
        return time.perf_counter() - t

    forward()
    times = {"forward": [], "forward, explicit attention": [], f"analysis, {args.workers} workers": [],
             "analysis, 0 workers": []}
    for _ in range(args.rounds):  # interleaved, so that a busy moment hits every variant alike
        times["forward"].append(forward())
        times["forward, explicit attention"].append(forward(fused=False))
        times[f"analysis, {args.workers} workers"].append(analysis(args.workers))
        times["analysis, 0 workers"].append(analysis(0))
    for how, pick in (("median", statistics.median), ("best", min)):
        base, explicit = pick(times["forward"]), pick(times["forward, explicit attention"])
        print(f"{how} of {args.rounds} rounds:")
        for name, ts in times.items():
            t = pick(ts)
            print(f"  {name:<28} {len(x) / t:8.1f} img/s   {base / t:5.2f}x the forward pass, "
                  f"{explicit / t:5.2f}x with explicit attention")


if __name__ == "__main__":
    main()
