"""Train the checkpoints every analysis reads, with the exact settings recorded here.

    uv run python analyses/train_models.py [--dataset fashion-mnist] [--only main|ablation|multiscale]
        [--models a,b] [--seeds 0,1,2]

main:     vit / revit / vit_cb micro_patch4_32, 2 epochs of the 60,000 Fashion-MNIST training
          images (about 7 minutes each on 2 CPU cores), no augmentation and no label smoothing
          (a 2-epoch budget), AdamW lr 2e-3 with 0.2 epochs of warm-up and a cosine decay,
          batch 64, seed 0, every epoch kept (globality over training)
ablation: revit micro with a fixed a in {0.25, 0.5, 0.75, 1.0} and with a learnable a, on the
          first 10,000 training images for 2 epochs (same recipe)
multiscale: the multiscale families against their bases at the main recipe, 2 epochs of all
          60,000 images: reswin_micro vs the same model with residual=false (timm's Swin), and
          remvitv2_micro vs residual=false (timm's MViTv2)
cifar10:  the main three on the 40,000 training images of the CIFAR-10 JPEG folder
          (--data-dir ../shared/data/cifar10-jpeg), 3 epochs (about 25 minutes a run on one
          CPU core) with a 4-pixel padded random crop and horizontal flips (no RandAugment,
          mixup or cutmix), otherwise the same recipe, seeds 0, 1 and 2
Each run is trained once per seed (--seeds, default 0,1,2 for main and ablation, 0 for the others)
into runs/<dataset>/<name>/seed<k>/ (last.pt, best.pt, epoch_<k>.pt, metrics.csv) and records
itself in run.json there: the command that trained it, its seed, epochs, images, wall time and
best top-1. A finished run is skipped, an interrupted one resumed.

--collect copies every finished run's best.pt into checkpoints/<dataset>/<name>/seed<k>.pt with
its metrics.csv and run.json beside it (seed<k>.metrics.csv, seed<k>.run.json) and its kept
epochs but the best (seed<k>.epoch<j>.pt): what is committed and what the analyses read when runs/ is absent.
"""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import shlex
import sys
import time
from typing import Optional

from common import COMMITTED, RUNS, SEED_FILE, dataset_args

from attnlab.train import TrainConfig, train

RECIPE = dict(batch_size=64, lr=2e-3, warmup_epochs=0.2, augment=False, drop_path=0.0, label_smoothing=0.0, seed=0,
              progress="off")
MAIN = {"vit_micro_patch4_32": {}, "revit_micro_patch4_32": {}, "vit_cb_micro_patch4_32": {}}
ABLATION = {f"revit_micro_a{a}": {"model": "revit_micro_patch4_32", "model_options": f"alpha={a},learn_alpha=false"}
            for a in ("0.25", "0.5", "0.75", "1.0")}
ABLATION["revit_micro_a-learned"] = {"model": "revit_micro_patch4_32"}
MULTISCALE = {
    "reswin_micro": {"model": "reswin_micro_patch2_window4_32"},
    "swin_micro": {"model": "reswin_micro_patch2_window4_32", "model_options": "residual=false"},
    "remvitv2_micro": {"model": "remvitv2_micro_32"},
    "mvitv2_micro": {"model": "remvitv2_micro_32", "model_options": "residual=false"},
}
#: Per-dataset changes to RECIPE, and the epochs when --epochs is not given.
DATASET_RECIPES = {
    "fashion-mnist": dict(epochs=2),
    "cifar10": dict(epochs=3, augment=True, randaugment=None, crop_padding=4, hflip=0.5, mixup=0.0, cutmix=0.0),
}


def run(name: str, dataset: str, data_dir, epochs: Optional[int], subset, extra: dict, seed: int = 0) -> None:
    out = RUNS / dataset / name / f"seed{seed}"
    info = out / "resume.json"
    if info.exists() and json.loads(info.read_text()).get("finished"):
        print(f"{name} seed {seed}: finished, skipping")
        return
    data = dataset_args(argparse.Namespace(dataset=dataset, data_dir=data_dir))
    recipe = {**RECIPE, **DATASET_RECIPES.get(dataset, {})}
    if epochs is not None:
        recipe["epochs"] = epochs
    cfg = TrainConfig(**{**recipe, "seed": seed, "model": extra.get("model", name), **data,
                         "subset": subset, "out": str(out),
                         **{k: v for k, v in extra.items() if k != "model"}})
    started = time.time()
    result = train(cfg.validate(), resume=info.exists(), log=print)
    record = {"run": name, "seed": seed, "model": cfg.model, "model_options": cfg.model_options,
              "dataset": dataset, "epochs": cfg.epochs, "train_images": subset, "best_top1": result.best_top1,
              "best_epoch": result.best_epoch, "train_seconds": sum(r["seconds"] for r in result.history),
              "wall_seconds_this_call": round(time.time() - started, 1),
              "command": " ".join(shlex.quote(a) for a in ["python", *sys.argv])}
    (out / "run.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"{name} seed {seed}: best top-1 {result.best_top1:.2f}% at epoch {result.best_epoch}")


def collect(dataset: str) -> None:
    """Copy each finished run (best.pt, metrics.csv, run.json) into checkpoints/<dataset>/<name>/."""
    for info in sorted((RUNS / dataset).glob("*/seed*/resume.json")):
        run_dir = info.parent
        if not json.loads(info.read_text()).get("finished") or not (run_dir / "best.pt").exists():
            continue
        name, seed = run_dir.parent.name, run_dir.name
        target = COMMITTED / dataset / name
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run_dir / "best.pt", target / f"{seed}.pt")
        shutil.copyfile(run_dir / "metrics.csv", target / f"{seed}.metrics.csv")
        rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
        best = int(max(rows, key=lambda r: float(r["top1"]))["epoch"])
        for epoch in run_dir.glob("epoch_*.pt"):  # the main runs keep every epoch (globality over training)
            if int(epoch.stem[len("epoch_"):]) != best:  # the best epoch is seed<k>.pt itself
                shutil.copyfile(epoch, target / f"{seed}.{epoch.stem.replace('_', '')}.pt")
        record = run_dir / "run.json"
        if record.exists():
            shutil.copyfile(record, target / f"{seed}.run.json")
        else:  # a run trained before runs recorded themselves: what its own files say
            rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
            best = max(rows, key=lambda r: float(r["top1"]))
            (target / f"{seed}.run.json").write_text(json.dumps({
                "run": name, "seed": int(seed[4:]), "dataset": dataset, "epochs": len(rows),
                "best_top1": float(best["top1"]), "best_epoch": int(best["epoch"]),
                "train_seconds": sum(float(r["seconds"]) for r in rows),
                "command": "not recorded (trained before train_models.py wrote run.json)"}, indent=1) + "\n")
        print(f"{target / seed}.pt")
    for ckpt in sorted((COMMITTED / dataset).glob("*/seed*.pt")):   # committed before runs recorded themselves
        record = ckpt.with_suffix(".run.json")
        if record.exists() or not SEED_FILE.fullmatch(ckpt.name):   # recorded, or an epoch file
            continue
        from attnlab import load_model

        prov = load_model(ckpt)[1].provenance
        cfg, rows = prov.get("config") or {}, list(csv.DictReader(ckpt.with_suffix(".metrics.csv").open()))
        record.write_text(json.dumps({
            "run": ckpt.parent.name, "seed": prov.get("seed"), "model": cfg.get("model"),
            "model_options": cfg.get("model_options"), "dataset": dataset, "epochs": prov.get("epochs"),
            "train_images": cfg.get("subset"), "best_top1": float((prov.get("metrics") or {}).get("top1", "nan")),
            "best_epoch": (prov.get("metrics") or {}).get("epoch"), "created": prov.get("created"),
            "train_seconds": sum(float(r["seconds"]) for r in rows),
            "command": "not recorded (trained before train_models.py wrote run.json); the checkpoint's config",
            "config": cfg}, indent=1, default=str) + "\n")
        print(record)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=None, help="default: 2 for fashion-mnist, 3 for cifar10")
    p.add_argument("--only", choices=["main", "ablation", "multiscale"], default=None)
    p.add_argument("--models", default=None, help="comma-separated run names to train (default all of the group)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2 for main and ablation, 0 otherwise)")
    p.add_argument("--collect", action="store_true", help="copy the finished runs into checkpoints/ and stop")
    args = p.parse_args()
    if args.collect:
        collect(args.dataset)
        raise SystemExit(0)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    picked = set(args.models.split(",")) if args.models else None
    unknown = picked - set(MAIN) - set(ABLATION) - set(MULTISCALE) if picked else set()
    if unknown:
        p.error(f"unknown run names {sorted(unknown)}; choose from {', '.join([*MAIN, *ABLATION, *MULTISCALE])}")
    if args.only in (None, "main"):
        for name in MAIN:
            if picked and name not in picked:
                continue
            for seed in seeds or [0, 1, 2]:
                run(name, args.dataset, args.data_dir, args.epochs, None, {"keep_epochs": "all"}, seed)
    if args.only in (None, "ablation"):
        for name, extra in ABLATION.items():
            if picked and name not in picked:
                continue
            for seed in seeds or [0, 1, 2]:
                run(name, args.dataset, args.data_dir, args.epochs, 10000, extra, seed)
    if args.only == "multiscale":
        for name, extra in MULTISCALE.items():
            if picked and name not in picked:
                continue
            for seed in seeds or [0]:
                run(name, args.dataset, args.data_dir, args.epochs, None, extra, seed)
