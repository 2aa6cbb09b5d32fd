"""Claim 2 (CB): context broadcasting lowers the entropy of the learned attention.

Per-layer attention entropy (nats and / log N) of ViT vs ViT+CB (ReViT alongside) for every
training seed: the CB paper's entropy-per-layer figure as means over seeds with t intervals,
ViT+CB - ViT and ReViT - ViT as paired differences over seeds, and per-head heatmaps of the
first seed. Writes figures/02_entropy/ (entropy.csv: over seeds; entropy_runs.csv: each run;
entropy_differences.csv).
"""
from common import dataset_args, out_dir, over_seed_runs, parser, setting, write_over_seeds

import attnlab
from attnlab.outputs import staged_outputs
from attnlab.plots import save_figure
from attnlab.plots import seeds as plots
from attnlab.plots.attention import entropy_heatmaps
from attnlab.studies import ENTROPY_METRICS

if __name__ == "__main__":
    args = parser(__doc__).parse_args()
    log_n = []

    def study(paths, labels):
        result = attnlab.measure_attention(paths, labels, num_images=args.images, metrics=ENTROPY_METRICS,
                                           **dataset_args(args))
        log_n.append(result.log_tokens())
        return result.frame

    runs = over_seed_runs(study, args.dataset)
    caption = setting(args.dataset, args.images)
    metrics, labels = ["entropy", "entropy_norm"], ["attention entropy (nats)", "entropy / log N"]
    with staged_outputs(out_dir("02_entropy", args.dataset)) as stage:
        summary, diff = write_over_seeds(stage, "entropy", runs)
        refs = {"entropy": (log_n[0], f"uniform: ln N = {log_n[0]:.2f}"), "entropy_norm": (1.0, "uniform: log N")}
        save_figure(plots.per_layer(summary, metrics, labels, "Attention entropy per layer", caption, refs),
                    stage, "entropy_per_layer")
        save_figure(plots.differences(diff, metrics, ["difference (nats)", "difference (/ log N)"],
                                      "Paired differences over seeds", caption), stage, "entropy_differences")
        first = runs[runs["seeds"].astype(str) == str(min(int(s) for s in runs["seeds"]))]
        save_figure(entropy_heatmaps(first), stage, "entropy_heatmap")
    d = summary[(summary["metric"] == "entropy_norm") & (summary["attention"] == "applied")]
    print(d.pivot_table(index="model", columns="layer", values="value").round(3))
    print(diff[diff["metric"] == "entropy_norm"][["model", "layer", "value", "ci_low", "ci_high"]].round(3)
          .to_string(index=False))
