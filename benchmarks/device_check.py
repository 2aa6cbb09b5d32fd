"""One GPU check at the papers' scale, at most a few minutes: training, analysis and a 518 px model.

(1) trains ``vit_small_patch16_224`` and ``revit_small_patch16_224`` for ``--steps`` steps
    at 224 px (bf16 autocast, fused AdamW; learnable synthetic images in Fashion-MNIST's file
    format, upscaled to 224 px by the models' input geometry), images/s from metrics.csv
    (the whole step, data included) and peak GPU memory;
(2) runs globality and a robustness sweep on 224 px inputs with the trained ReViT (and the
    globality study again on the CPU: the values must agree to 1e-5), and the
    globality metrics on a DINOv2-size model (``vit_small_patch14_dinov2`` at 518 px: 37 x 37
    patches + 1 class token = 1,370 tokens, random weights), each against the plain forward
    pass of the same model on the same images (pre-decoded tensors on the GPU);
and prints one table. Run: ``bash benchmarks/device_check.sh`` on a machine with a GPU
(``--device cpu --steps 4 --batch-size 8 --images 16`` runs the same code on a CPU, as a check
of the script, with no memory figures).
"""
from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

import torch

import attnlab
from attnlab.data.workers import default_workers
from attnlab.spec import InputSpec
from attnlab.studies import GLOBALITY_METRICS
from attnlab.studies.robustness import measure_robustness
from attnlab.train import TrainConfig, train, write_fashion_mnist_idx


CUDA = torch.cuda.is_available()


def sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def peak_reset() -> None:
    if CUDA:
        sync()
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> str:
    if not CUDA:
        return "-"
    sync()
    return f"{torch.cuda.max_memory_allocated() / 2 ** 30:.1f} GiB"


def forward_seconds(model: torch.nn.Module, spec: InputSpec, images: int, batch: int, device: str) -> float:
    """The plain forward pass (float32, as the analysis) over ``images`` inputs already on the device."""
    model = model.to(device).eval()
    x = torch.randn(batch, spec.channels, *spec.size, device=device)
    with torch.inference_mode():
        model(x)
        sync()
        t = time.perf_counter()
        for _ in range(max(1, images // batch)):
            model(x)
        sync()
    return (time.perf_counter() - t) * images / (max(1, images // batch) * batch)


def timed(fn) -> tuple:  # noqa: ANN001
    sync()
    t = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--images", type=int, default=1024, help="images for the 224 px analyses")
    ap.add_argument("--out", default=None)
    ap.add_argument("--device", default="cuda", help="cuda (default), or cpu to check the script")
    args = ap.parse_args()
    if args.device.startswith("cuda") and not CUDA:
        raise SystemExit("device_check needs a CUDA GPU (torch.cuda.is_available() is False); --device cpu checks the script")
    root = Path(args.out or tempfile.mkdtemp(prefix="attnlab-device-"))
    n_train = args.steps * args.batch_size // 2  # two epochs make --steps steps
    data = write_fashion_mnist_idx(root / "data", n_train=n_train, n_test=args.images)
    rows = []
    ckpts = {}
    for name in ("vit_small_patch16_224", "revit_small_patch16_224"):
        peak_reset()
        cfg = TrainConfig(model=name, dataset="fashion-mnist", data_dir=str(data), epochs=2,
                          batch_size=args.batch_size, lr=1e-3, warmup_epochs=0.2, out=str(root / name),
                          device=args.device, progress="off").validate()
        result = train(cfg, log=lambda line: None)
        history = list(csv.DictReader((root / name / "metrics.csv").open()))
        rows.append((f"train {name}", f"{float(history[-1]['images_per_s']):.4g} img/s", peak_gib(),
                     f"top-1 {result.best_top1:.1f}% after {result.steps_per_epoch * 2} steps"))
        ckpts[name] = str(result.out_dir / "best.pt")
    model, spec = attnlab.load_model(ckpts["revit_small_patch16_224"])
    common = dict(dataset="fashion-mnist", data_dir=str(data), num_images=args.images, device=args.device,
                  batch_size=min(64, args.images), workers=default_workers())
    forward = forward_seconds(model, spec.input, args.images, min(64, args.images), args.device)
    for label, fn in (("globality 224 px (ReViT-S)", lambda: attnlab.measure_attention(
            [ckpts["revit_small_patch16_224"]], ["ReViT-S"], metrics=GLOBALITY_METRICS, **common)),
            ("robustness 224 px (ReViT-S, 7 views)", lambda: measure_robustness(
                [ckpts["revit_small_patch16_224"]], ["ReViT-S"], shifts=[0, 8, 16], scales=[0.75, 1.0, 1.25],
                **common))):
        peak_reset()
        _, seconds = timed(fn)
        views = 7 if label.startswith("robustness") else 1
        rows.append((label, f"{args.images * views / seconds:.4g} img/s", peak_gib(),
                     f"throughput analysis / forward {forward * views / seconds:.2f}x"))
    if args.device.startswith("cuda"):  # the same study on the CPU: results must agree to 1e-5
        small = {**common, "num_images": 64}
        frames = [attnlab.measure_attention([ckpts["revit_small_patch16_224"]], ["ReViT-S"], metrics=GLOBALITY_METRICS,
                                            **{**small, "device": device}).frame for device in ("cuda", "cpu")]
        diff = float((frames[0]["value"] - frames[1]["value"]).abs().max())
        rows.append(("globality GPU vs CPU (64 images)", "-", "-",
                     f"largest difference {diff:.1e} ({'within' if diff <= 1e-5 else 'OVER'} 1e-5)"))
    dino = attnlab.create_model("vit_small_patch14_dinov2", img_size=518, num_classes=10)
    dino_spec = InputSpec(size=(518, 518), channels=3, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    n = min(args.images, 256)
    forward = forward_seconds(dino, dino_spec, n, min(32, n), args.device)
    peak_reset()
    _, seconds = timed(lambda: attnlab.measure_attention([dino], ["DINOv2-S 518"], metrics=GLOBALITY_METRICS,
                                                         input_spec=dino_spec, **{**common, "num_images": n,
                                                                                  "batch_size": min(32, n)}))
    rows.append(("globality 518 px (ViT-S/14, 1,370 tokens)", f"{n / seconds:.4g} img/s", peak_gib(),
                 f"throughput analysis / forward {forward / seconds:.2f}x"))
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"{where}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    print(f"| {'what':<44} | {'throughput':>12} | {'peak GPU memory':>15} | note |")
    print(f"|{'-' * 46}|{'-' * 14}|{'-' * 17}|------|")
    for what, rate, mem, note in rows:
        print(f"| {what:<44} | {rate:>12} | {mem:>15} | {note} |")


if __name__ == "__main__":
    main()
