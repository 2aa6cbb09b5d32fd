"""The `a` ablation: accuracy and attention distance of ReViT with a fixed a in {0.25, 0.5,
0.75, 1.0} (a = 1 is plain ViT attention) and with a learnable a, and where the learnable a
ends up, over every training seed (means with t intervals; each setting minus a = 1 as paired
differences over seeds).

Reads the runs of `analyses/train_models.py --only ablation` (runs/ or checkpoints/).
Writes figures/05_alpha_ablation/ (alpha_ablation.csv: over seeds; alpha_ablation_runs.csv;
alpha_ablation_differences.csv; the accuracy and attention-distance figure).
"""
import pandas as pd
from common import dataset_args, out_dir, over_seed_runs, parser, setting, write_over_seeds

from attnlab import load_model, measure_attention
from attnlab.checkpoint import file_sha256
from attnlab.outputs import staged_outputs
from attnlab.plots import save_figure
from attnlab.plots import seeds as plots
from attnlab.tables import tidy

RUNS = {"a = 0.25": "revit_micro_a0.25", "a = 0.5": "revit_micro_a0.5", "a = 0.75": "revit_micro_a0.75",
        "a = 1.0": "revit_micro_a1.0", "a learned": "revit_micro_a-learned"}

if __name__ == "__main__":
    args = parser(__doc__).parse_args()

    def study(paths, labels):
        frame = measure_attention(paths, labels, num_images=args.images, metrics=("mad_px",), **dataset_args(args)).frame
        rows = []
        for path, label in zip(paths, labels):
            model, spec = load_model(path)
            common = dict(model=label, checkpoint=file_sha256(path), arch=spec.arch)
            rows.append(dict(common, metric="top1", value=float(spec.provenance["metrics"]["top1"]), n_images=10000))
            rows.append(dict(common, metric="alpha", value=float(model.alpha.detach().flatten().mean()), n_images=0))
        return pd.concat([tidy(rows), frame], ignore_index=True)

    runs = over_seed_runs(study, args.dataset, RUNS)
    comparisons = [(label, "a = 1.0") for label in RUNS if label != "a = 1.0"]
    caption = setting(args.dataset, args.images).replace("2 epochs", "first 10,000 training images, 2 epochs")
    with staged_outputs(out_dir("05_alpha_ablation", args.dataset)) as stage:
        summary, diff = write_over_seeds(stage, "alpha_ablation", runs, comparisons)
        save_figure(plots.bars(summary, runs, "top1", "top-1 (%)", "ReViT's a: test accuracy", caption), stage,
                    "alpha_ablation")
        save_figure(plots.per_layer(summary, ["mad_px"], ["mean attention distance (px)"], "ReViT's a: attention distance",
                                    caption), stage, "alpha_ablation_distance")
    print(summary[summary["metric"].isin(["top1", "alpha"])][["model", "metric", "value", "ci_low", "ci_high", "seeds"]]
          .round(3).to_string(index=False))
    print(diff[diff["metric"] == "top1"][["model", "value", "ci_low", "ci_high"]].round(2).to_string(index=False))
