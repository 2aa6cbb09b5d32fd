"""Streamed training data against the in-memory path, on real JPEG files.

(a) training throughput (metrics.csv ``images_per_s``: wall clock of whole steps, the wait
    for data included) of ``--stream --workers 2`` against the in-memory path on the same
    images, vit_micro_patch4_32 at 32 px, default recipe (crop + flip): target >= 0.8x.
    Rounds are interleaved (memory, stream, memory, ...) and the median ratio is reported;
    the last epoch of each run is timed (the first starts the workers).
(b) per-worker decode + augment throughput (attnlab's streamed sample: file decode, timm
    training transform, per-sample seeding) against a bare PIL decode loop over the same
    files, one process, process CPU time (``--clock``, as in the other benchmarks).
(c) peak memory of a short streamed run (``--steps`` training steps, 2 workers) on 10,000
    and on 40,000 images, each in its own subprocess: the main process's RSS high-water
    mark (``resource.getrusage``) plus the largest worker's times the number of workers
    (forked workers share pages with the main process, so this counts those twice), and
    the peak of the processes' summed PSS (``/proc/<pid>/smaps_rollup``, sampled every
    50 ms; shared pages split between their sharers): target 40k within 10% of 10k,
    where the in-memory tensors would be 4x.

The images are ``../shared/data/cifar10-jpeg`` beside the repository when it is there
(real CIFAR-10 JPEGs), else a folder of JPEGs this script writes from Fashion-MNIST
(the real files when installed, else attnlab's generated stand-ins).
Run: ``.venv/bin/python benchmarks/bench_stream.py``.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from timing import add_clock_options, setup_clock

SHARED_JPEGS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg"
MODEL = "vit_micro_patch4_32"


def image_folder(n_train: int, n_test: int = 512) -> tuple:
    """(root of an image folder with >= n_train training JPEGs, what it is)."""
    if (SHARED_JPEGS / "train").is_dir():
        return SHARED_JPEGS, "real CIFAR-10 JPEGs (../shared/data/cifar10-jpeg)"
    import numpy as np
    from PIL import Image

    from attnlab.errors import AttnlabError
    from attnlab.train.synthetic import class_images

    root = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    try:
        from attnlab.data.fashion_mnist import load_fashion_mnist

        ds = load_fashion_mnist(split="train", subset=n_train + n_test)
        images, labels, what = ds.images, ds.targets, "Fashion-MNIST written as JPEGs"
    except AttnlabError:
        labels = np.arange(n_train + n_test) % 10
        images, what = class_images(labels, np.random.default_rng(0)), "generated images written as JPEGs"
    for i, (img, k) in enumerate(zip(images, labels)):
        folder = root / ("train" if i < n_train else "test") / f"class{int(k)}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i:05d}.jpg", quality=90)
    return root, f"{what} ({root})"


def config(root: Path, out: Path, n: int, data: str, epochs: int, batch: int, threads: int, workers: int = 2):
    from attnlab.train import TrainConfig

    return TrainConfig.from_mapping(dict(
        model=MODEL, dataset="imagefolder", data_dir=str(root), subset=n, eval_subset=256, epochs=epochs,
        batch_size=batch, data=data, workers=workers, threads=threads, progress="off", save_every=0,
        out=str(out), device="cpu"))


def throughput(root: Path, n: int, rounds: int, epochs: int, batch: int, threads: int) -> None:
    """(a): images/s of the last epoch, memory against stream, interleaved rounds."""
    from attnlab.train import train

    mem, stream = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for mode, into in (("memory", mem), ("stream", stream)):
                result = train(config(root, Path(tmp) / f"{mode}{r}", n, mode, epochs, batch, threads), log=None)
                into.append(float(result.history[-1]["images_per_s"]))
            print(f"  round {r + 1}: in memory {mem[-1]:.1f} img/s, streamed (2 workers) {stream[-1]:.1f} img/s")
    ratio = statistics.median(s / m for s, m in zip(stream, mem))
    print(f"(a) streamed / in-memory training throughput ({MODEL}, {n} JPEGs, batch {batch}, {threads} torch "
          f"thread(s), wall clock): {ratio:.3f}x  (target >= 0.8x)")


def decode_rates(root: Path, n: int, clock) -> None:
    """(b): images/s of one worker's work (decode + transform) against a bare PIL decode loop."""
    from PIL import Image

    from attnlab.data import load_dataset
    from attnlab.models import create_model
    from attnlab.train import TrainConfig
    from attnlab.train.data import input_spec_for
    from attnlab.train.loader import SeededSamples, stream_transform
    from attnlab.train.recipe import apply_recipe

    ds = load_dataset("imagefolder", "train", data_dir=root, subset=n)
    spec = input_spec_for(create_model(MODEL, in_chans=3), "imagefolder", 3)
    for name, overrides in (("crop + flip (short recipe)", {}),
                            ("crop + flip + RandAugment m9 n2 + erasing 0.25", {"randaugment": "rand-m9-n2",
                                                                                 "random_erasing": 0.25})):
        cfg, _ = apply_recipe(TrainConfig(model=MODEL, recipe="short", **overrides), n)
        samples = SeededSamples(ds, stream_transform(cfg, spec), seed=0)
        t = clock()
        for i in range(len(ds)):
            with Image.open(ds.paths[i]) as im:
                im.load()
        bare = len(ds) / (clock() - t)
        t = clock()
        for i in range(len(ds)):
            samples[(i, 0, i)]
        ours = len(ds) / (clock() - t)
        print(f"(b) {name}: decode + augment {ours:,.0f} img/s per worker, bare PIL decode {bare:,.0f} img/s "
              f"({ours / bare:.2f}x)")


def tree_pss() -> int:
    """Proportional set size (bytes) of this process and its children (the workers), from /proc:
    shared pages are split between the processes that share them, so the sum is what they use."""
    pids = [str(Path("/proc/self").resolve().name)]
    for children in Path("/proc/self/task").glob("*/children"):
        pids += children.read_text().split()
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:  # a worker that just exited
            pass
    return total


def peak_child(root: str, n: int, steps: int, batch: int, tmp: str) -> None:
    """Run in a subprocess: ``steps`` streamed training steps; print the memory peaks as JSON."""
    import gc
    import threading

    peak = {"pss": 0}
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            try:
                peak["pss"] = max(peak["pss"], tree_pss())
            except OSError:  # no /proc here
                return

    threading.Thread(target=sample, daemon=True).start()
    from attnlab.train.loop import Trainer
    from attnlab.train.records import EpochTally
    from attnlab.train.state import epoch_permutation

    t = Trainer(config(Path(root), Path(tmp) / "run", n, "stream", 1, batch, 1), log=None)
    t.setup()
    t._build_training()
    t.global_step, t.history = 0, []
    batches = t.batches.epoch(0, 0, epoch_permutation(0, 0, t.train_images))
    tally = EpochTally()
    for step in range(steps):
        t._train_step(0, step, batches, tally)
    done.set()
    del batches
    t.batches.close()
    gc.collect()
    time.sleep(0.5)
    kib = 1024  # Linux reports ru_maxrss in KiB
    print(json.dumps({"main": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kib,
                      "worker": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * kib,
                      "pss": peak["pss"], "images": t.train_images}))


def peaks(root: Path, sizes, steps: int, batch: int) -> None:
    """(c): the child's peaks for each size, each in a fresh process."""
    from attnlab.spec import InputSpec
    from attnlab.train.loader import tensor_bytes

    totals, pss = [], []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run([sys.executable, __file__, "--peak-child", str(n), "--steps", str(steps),
                                  "--batch-size", str(batch), "--data-dir", str(root), "--tmp", tmp],
                                 capture_output=True, text=True, check=True).stdout
        p = json.loads(out.strip().splitlines()[-1])
        totals.append(p["main"] + 2 * p["worker"])
        pss.append(p["pss"])
        mem = tensor_bytes(p["images"], InputSpec((32, 32), 3, (0,) * 3, (1,) * 3))
        print(f"    {p['images']:,} images: RSS peak of the main process {p['main'] / 2**20:.0f} MiB, of the "
              f"largest worker {p['worker'] / 2**20:.0f} MiB (main + 2 workers {totals[-1] / 2**20:.0f} MiB); "
              f"peak PSS of all three {p['pss'] / 2**20:.0f} MiB; the in-memory tensors would be {mem / 2**20:.0f} MiB")
    print(f"(c) peak memory of a {steps}-step streamed run, {sizes[-1]:,} / {sizes[0]:,} images: RSS main + 2 workers "
          f"{totals[-1] / totals[0]:.3f}x, PSS {pss[-1] / max(1, pss[0]):.3f}x, growth "
          f"{(totals[-1] - totals[0]) / 2**20:+.0f} MiB RSS / {(pss[-1] - pss[0]) / 2**20:+.0f} MiB PSS  "
          f"(target <= 1.10x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2048, help="training images for (a) and (b)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=2, help="epochs per run in (a); the last is timed")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds in (a)")
    ap.add_argument("--steps", type=int, default=30, help="training steps of each run in (c)")
    ap.add_argument("--sizes", default="10000,40000", help="training images of the two runs in (c)")
    ap.add_argument("--data-dir", default=None, help="an image folder (default: see the module doc)")
    ap.add_argument("--peak-child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--tmp", default=None, help=argparse.SUPPRESS)
    add_clock_options(ap)
    args = ap.parse_args()
    if args.peak_child is not None:
        peak_child(args.data_dir, args.peak_child, args.steps, args.batch_size, args.tmp)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    clock = setup_clock(args)
    threads = args.threads or 1
    if args.data_dir:
        root, what = Path(args.data_dir), f"image folder {args.data_dir}"
    else:
        root, what = image_folder(max(sizes + [args.images]))
    print(f"data: {what}")
    throughput(root, args.images, args.rounds, args.epochs, args.batch_size, threads)
    decode_rates(root, min(args.images, 1024), clock)
    peaks(root, sizes, args.steps, args.batch_size)


if __name__ == "__main__":
    main()
