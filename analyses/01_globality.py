"""Claim 1 (ReViT): residual attention keeps attention local in deep layers.

Mean attention distance per layer and per head, ViT vs ReViT vs ViT+CB, and the globality
curves, on test images, for every training seed: the means over seeds with t intervals,
ReViT - ViT and ViT+CB - ViT as paired differences over seeds, and the ReViT paper's own
form of the figure (a dot per head against layer, one panel per model). Writes
figures/01_globality/ (globality.csv: over seeds; globality_runs.csv: each run;
globality_differences.csv).
"""
from common import dataset_args, out_dir, over_seed_runs, parser, setting, write_over_seeds

import attnlab
from attnlab.outputs import staged_outputs
from attnlab.plots import save_figure
from attnlab.plots import seeds as plots
from attnlab.plots.attention import globality_curves
from attnlab.studies import GLOBALITY_METRICS

if __name__ == "__main__":
    args = parser(__doc__).parse_args()
    uniform = []

    def study(paths, labels):
        result = attnlab.measure_attention(paths, labels, num_images=args.images, metrics=GLOBALITY_METRICS,
                                           **dataset_args(args))
        uniform.append(result.uniform_distance())
        return result.frame

    runs = over_seed_runs(study, args.dataset)
    caption = setting(args.dataset, args.images)
    with staged_outputs(out_dir("01_globality", args.dataset)) as stage:
        summary, diff = write_over_seeds(stage, "globality", runs)
        ref = {"mad_px": (uniform[0], f"uniform attention ({uniform[0]:.1f} px)")}
        save_figure(plots.per_layer(summary, ["mad_px"], ["mean attention distance (px)"],
                                    "Attention distance per layer", caption, ref), stage, "mad_per_layer")
        save_figure(plots.heads_per_layer(runs, "mad_px", caption, uniform[0]), stage, "mad_per_head")
        save_figure(plots.differences(diff, ["mad_px"], ["difference in distance (px)"],
                                      "Paired differences over seeds", caption), stage, "mad_differences")
        save_figure(globality_curves(summary[summary["attention"] == "applied"]), stage, "globality_curves")
    d = summary[(summary["metric"] == "mad_px") & (summary["attention"] == "applied")]
    print(d.pivot_table(index="model", columns="layer", values="value").round(2))
    print(diff[diff["metric"] == "mad_px"][["model", "layer", "value", "ci_low", "ci_high"]].round(2).to_string(index=False))
