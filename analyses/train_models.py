"""Train the checkpoints every analysis reads, with the exact settings recorded here.

    uv run python analyses/train_models.py [--dataset fashion-mnist] [--only main|ablation]

main:     vit / revit / vit_cb micro_patch4_32, 2 epochs of the 60,000 Fashion-MNIST training
          images (about 7 minutes each on 2 CPU cores), no augmentation and no label smoothing
          (a 2-epoch budget), AdamW lr 2e-3 with 0.2 epochs of warm-up and a cosine decay,
          batch 128, seed 0, every epoch kept (globality over training)
ablation: revit micro with a fixed a in {0.25, 0.5, 0.75, 1.0} and with a learnable a, on the
          first 10,000 training images for 2 epochs (same recipe)
Runs go to runs/<dataset>/<name>/ (last.pt, best.pt, epoch_<k>.pt, metrics.csv); a finished
run is skipped, an interrupted one resumed.
"""
from __future__ import annotations

import argparse
import json

from common import RUNS, dataset_args

from attnlab.train import TrainConfig, train

RECIPE = dict(batch_size=128, lr=2e-3, warmup_epochs=0.2, augment=False, drop_path=0.0, label_smoothing=0.0, seed=0,
              progress="off")
MAIN = {"vit_micro_patch4_32": {}, "revit_micro_patch4_32": {}, "vit_cb_micro_patch4_32": {}}
ABLATION = {f"revit_micro_a{a}": {"model": "revit_micro_patch4_32", "model_options": f"alpha={a},learn_alpha=false"}
            for a in ("0.25", "0.5", "0.75", "1.0")}
ABLATION["revit_micro_a-learned"] = {"model": "revit_micro_patch4_32"}


def run(name: str, dataset: str, data_dir, epochs: int, subset, extra: dict) -> None:
    out = RUNS / dataset / name
    info = out / "resume.json"
    if info.exists() and json.loads(info.read_text()).get("finished"):
        print(f"{name}: finished, skipping")
        return
    data = dataset_args(argparse.Namespace(dataset=dataset, data_dir=data_dir))
    cfg = TrainConfig(**{**RECIPE, "model": extra.get("model", name), **data,
                         "epochs": epochs, "subset": subset, "out": str(out),
                         **{k: v for k, v in extra.items() if k != "model"}})
    result = train(cfg.validate(), resume=info.exists(), log=print)
    print(f"{name}: best top-1 {result.best_top1:.2f}% at epoch {result.best_epoch}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--only", choices=["main", "ablation"], default=None)
    args = p.parse_args()
    if args.only in (None, "main"):
        for name in MAIN:
            run(name, args.dataset, args.data_dir, args.epochs, None, {"keep_epochs": "all"})
    if args.only in (None, "ablation"):
        for name, extra in ABLATION.items():
            run(name, args.dataset, args.data_dir, args.epochs, 10000, extra)
