"""Training-speed ratios, all measured in one run on this machine.

(a) attnlab's training throughput vs a minimal hand-written loop (same timm model, same
    in-memory uint8 data, same batch size and optimizer, augmentation off in both):
    target >= 0.95x.
(b) per-step time (forward + backward + AdamW) of ReViT / ViT (target <= 1.25x) and
    CB / ViT (target <= 1.05x) at the same size.
(c) the fast path: augmented images per second from the in-memory tensor pipeline vs the
    per-image PIL pipeline (attnlab.data.train_transform through a DataLoader).

Measurements are interleaved (A, B, A, B, ...) and the median is reported. On a shared,
busy CPU wall-clock time mostly measures the neighbours (and OpenMP threads spinning for
cores they do not get), so by default everything runs on one thread and is timed with
process CPU time (``--clock cpu``): the work each loop does, which is what the ratios are
about. ``--clock wall --threads N`` times the wall clock instead (attnlab's own
``images_per_s`` then comes straight from its metrics).
Run: ``.venv/bin/python benchmarks/bench_train.py``.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import types
from pathlib import Path

import torch
from timing import add_clock_options, setup_clock
from torch import nn


CLOCK = time.perf_counter


def load_data(n: int, data_dir: str | None):
    """First n Fashion-MNIST training images (real data if installed, else generated), as a
    small IDX folder (256 test images, so per-epoch evaluation stays cheap) and in memory."""
    import gzip

    import numpy as np

    from attnlab.data import load_dataset
    from attnlab.models import create_model
    from attnlab.train.data import input_spec_for, to_tensor_data
    from attnlab.train.synthetic import write_fashion_mnist_idx

    folder = Path(tempfile.mkdtemp(prefix="bench-fm-"))
    try:
        for split, prefix, count in (("train", "train", n), ("test", "t10k", 256)):
            src = load_dataset("fashion-mnist", split, data_dir=data_dir, subset=count)
            for kind, arr in (("images-idx3", src.images), ("labels-idx1", src.targets.astype(np.uint8))):
                header = bytes([0, 0, 0x08, arr.ndim]) + np.array(arr.shape, dtype=">u4").tobytes()
                (folder / f"{prefix}-{kind}-ubyte.gz").write_bytes(
                    gzip.compress(header + np.ascontiguousarray(arr).tobytes(), compresslevel=1))
        source = "real Fashion-MNIST"
    except Exception:  # no real data here: generated stand-ins in the same format
        write_fashion_mnist_idx(folder, n_train=n, n_test=256)
        source = "generated Fashion-MNIST-like data"
    ds = load_dataset("fashion-mnist", "train", data_dir=folder)
    spec = input_spec_for(create_model("vit_micro_patch4_32", in_chans=1), "fashion-mnist", 1)
    return to_tensor_data(ds, spec), spec, folder, source


def minimal_loop(data, spec, model_name: str, batch: int, steps: int, lr: float, seed: int = 0,
                 warmup: int = 1) -> float:
    """The hand-written reference: index, normalise, forward, loss, backward, AdamW. Returns img/s."""
    from attnlab.models import create_model

    torch.manual_seed(seed)
    model = create_model(model_name, in_chans=1, num_classes=10).train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    loss_fn = nn.CrossEntropyLoss()
    perm = torch.randperm(len(data))
    # untimed warm-up steps, as attnlab's timed epoch comes after its first one
    t0 = None
    for s in range(steps + warmup):
        if s == warmup:
            t0 = CLOCK()
        idx = perm[(s * batch) % (len(data) - batch + 1):][:batch]
        x = data.images[idx].float().div(255).sub(mean).div(std)
        y = data.targets[idx]
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch / (CLOCK() - t0)


def attnlab_loop(data_dir, n: int, model_name: str, batch: int, epochs: int, lr: float, out: Path) -> float:
    """attnlab.train.train with augmentation off; throughput of its last epoch (train steps only)."""
    from attnlab.train import TrainConfig
    from attnlab.train import loop
    from attnlab.train.loop import train

    loop.time = types.SimpleNamespace(perf_counter=CLOCK)  # the trainer times its steps with our clock

    cfg = TrainConfig.from_mapping(dict(
        model=model_name, dataset="fashion-mnist", data_dir=str(data_dir), subset=n,
        epochs=epochs, batch_size=batch, lr=lr, augment=False, drop_path=0.0, label_smoothing=0.0, clip_grad=0.0,
        warmup_epochs=0, save_every=0, progress="off", out=str(out), eval_batch_size=512))
    result = train(cfg, log=None)
    return float(result.history[-1]["images_per_s"])


def step_time(model_name: str, batch: int, steps: int) -> float:
    """Median seconds per training step (forward + backward + AdamW) on random 1x32x32 input."""
    from attnlab.models import create_model

    torch.manual_seed(0)
    model = create_model(model_name, in_chans=1, num_classes=10).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 1, 32, 32)
    y = torch.randint(0, 10, (batch,))
    times = []
    for s in range(steps + 1):
        t = CLOCK()
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if s:  # skip the warm-up step
            times.append(CLOCK() - t)
    return statistics.median(times)


def pipeline_rates(data, spec, data_dir, n_images: int, batch: int) -> tuple:
    """Augmented images/s: tensor fast path vs PIL train_transform + DataLoader (same recipe strength)."""
    from attnlab.data import load_dataset, train_transform
    from attnlab.train.augment import TensorAugment
    from attnlab.train.data import normalize_uint8

    aug = TensorAugment("rand-m9-n2", crop_padding=4, hflip=0.5, fill=[round(255 * spec.mean[0])])
    mean = torch.tensor(spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(spec.std).view(1, -1, 1, 1)
    g = torch.Generator().manual_seed(0)
    t = CLOCK()
    done = 0
    while done < n_images:
        idx = torch.randint(len(data), (batch,), generator=g)
        normalize_uint8(aug(data.images[idx], g), mean, std)
        done += batch
    fast = done / (CLOCK() - t)

    ds = load_dataset("fashion-mnist", "train", data_dir=data_dir, subset=min(len(data), n_images),
                      transform=train_transform(spec, randaugment="rand-m9-n2"))
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, num_workers=0)
    t = CLOCK()
    done = 0
    for x, _ in loader:
        done += len(x)
    pil = done / (CLOCK() - t)
    return fast, pil


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1024, help="training images for (a)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2, help="attnlab epochs per round in (a); the last is timed")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per comparison")
    ap.add_argument("--step-repeats", type=int, default=6, help="timed steps per model per round in (b)")
    ap.add_argument("--size", default="micro", help="model size for (b): micro, tiny or small")
    add_clock_options(ap)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    global CLOCK
    CLOCK = setup_clock(args)
    print(f"batch {args.batch_size}")

    data, spec, data_dir, source = load_data(args.images, args.data_dir)
    print(f"data: {source}, {len(data)} training images in memory")
    steps = (args.images // args.batch_size)
    model = "vit_micro_patch4_32"

    # (a) attnlab vs minimal loop
    ours, ref = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            ours.append(attnlab_loop(data_dir, args.images, model, args.batch_size, args.epochs, 1e-3, Path(tmp) / f"r{r}"))
            ref.append(minimal_loop(data, spec, model, args.batch_size, steps * (args.epochs - 1), 1e-3,
                                    warmup=steps))
            print(f"  round {r + 1}: attnlab {ours[-1]:.1f} img/s, minimal loop {ref[-1]:.1f} img/s")
    ratio_a = statistics.median(o / m for o, m in zip(ours, ref))
    print(f"(a) attnlab / minimal loop throughput ({model}, {args.images} in-memory images): "
          f"{ratio_a:.3f}x  (target >= 0.95x)")

    # (b) per-step time ratios
    names = {fam: f"{fam}_{args.size}_patch4_32" for fam in ("vit", "revit", "vit_cb")}
    times = {fam: [] for fam in names}
    for _ in range(args.rounds):
        for fam, name in names.items():
            times[fam].append(step_time(name, args.batch_size, args.step_repeats))
    med = {fam: statistics.median(v) for fam, v in times.items()}
    print("    per-step ms: " + ", ".join(f"{fam} {1000 * t:.1f}" for fam, t in med.items()))
    print(f"(b) per-step time ReViT / ViT ({args.size}): {med['revit'] / med['vit']:.3f}x  (target <= 1.25x)")
    print(f"    per-step time CB / ViT ({args.size}):    {med['vit_cb'] / med['vit']:.3f}x  (target <= 1.05x)")

    # (c) fast path
    fast, pil = pipeline_rates(data, spec, data_dir, min(2048, 4 * args.images), args.batch_size)
    print(f"(c) augmented images/s (RandAugment m9 n2 + crop + flip): tensor fast path {fast:,.0f}, "
          f"PIL train_transform + DataLoader {pil:,.0f}: {fast / pil:.1f}x; "
          f"model step alone {args.batch_size / med['vit']:,.0f} img/s")


if __name__ == "__main__":
    main()
