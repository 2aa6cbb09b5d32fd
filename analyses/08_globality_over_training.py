"""Globality over training: per-layer mean attention distance at initialisation and after
every epoch, ViT vs ReViT (does residual attention keep early layers local as it learns?).

Reads runs/<dataset>/<model>/epoch_<k>.pt (train_models.py keeps every epoch) at epochs
1, 2, 4, 8, ... and the last; epoch 0 is the same architecture freshly initialised with the
run's seed. Writes
figures/08_globality_over_training/.
"""
import re

import matplotlib.pyplot as plt
import pandas as pd
import torch
from common import RUNS, dataset_args, out_dir, parser

from attnlab import load_model, measure_attention, save_checkpoint
from attnlab.models import create_model
from attnlab.outputs import staged_outputs
from attnlab.plots import save_figure, use_style
from attnlab.tables import write_csv

MODELS = {"ViT": "vit_micro_patch4_32", "ReViT": "revit_micro_patch4_32"}

if __name__ == "__main__":
    args = parser(__doc__).parse_args()
    frames = []
    tmp = RUNS / args.dataset / "_init"
    for label, name in MODELS.items():
        run = RUNS / args.dataset / name
        epochs = sorted(int(re.findall(r"\d+", p.stem)[0]) for p in run.glob("epoch_*.pt"))
        if not epochs:
            raise SystemExit(f"no epoch checkpoints in {run}: run `uv run python analyses/train_models.py` first")
        epochs = [e for e in epochs if e & (e - 1) == 0 or e == epochs[-1]]  # 1, 2, 4, 8, ... and the last
        trained, spec = load_model(run / f"epoch_{epochs[-1]}.pt")
        torch.manual_seed(spec.provenance.get("seed", 0))
        init = create_model(spec.arch, **spec.options)
        init_path = save_checkpoint(init, tmp / f"{name}.pt", classes=spec.classes, input_spec=spec.input,
                                    provenance={"epochs": 0})
        for epoch, path in [(0, init_path)] + [(e, run / f"epoch_{e}.pt") for e in epochs]:
            frame = measure_attention([str(path)], [label], num_images=args.images, metrics=("mad_px",),
                                      **dataset_args(args)).frame
            frame = frame[(frame["head"] == -1) & (frame["attention"] == "applied")].copy()
            frame["transform"], frame["magnitude"] = "epoch", float(epoch)
            frames.append(frame)
    frame = pd.concat(frames, ignore_index=True)
    use_style()
    fig, axes = plt.subplots(1, len(MODELS), figsize=(7.2, 2.8), sharey=True)
    cmap = plt.get_cmap("viridis")
    for ax, label in zip(axes, MODELS):
        d = frame[frame["model"] == label]
        epochs = sorted(d["magnitude"].unique())
        for k, e in enumerate(epochs):
            de = d[d["magnitude"] == e].sort_values("layer")
            ax.plot(de["layer"] + 1, de["value"], marker="o", color=cmap(k / max(len(epochs) - 1, 1)),
                    label="init" if e == 0 else f"epoch {int(e)}")
        ax.set_title(label)
        ax.set_xlabel("layer")
    axes[0].set_ylabel("mean attention distance (px)")
    axes[-1].legend(frameon=False)
    fig.tight_layout()
    with staged_outputs(out_dir("08_globality_over_training", args.dataset)) as stage:
        write_csv(frame, stage / "globality_over_training.csv")
        save_figure(fig, stage, "globality_over_training")
    print(frame.pivot_table(index=["model", "magnitude"], columns="layer", values="value").round(2))
