"""Feature diversity per layer: do tokens collapse? Mean pairwise cosine similarity of the
patch tokens and effective rank of the patch-token matrix after every block, for the three
families and every training seed (means over seeds with t intervals; paired differences
against ViT). Writes figures/07_feature_diversity/ (feature_diversity.csv: over seeds;
feature_diversity_runs.csv; feature_diversity_differences.csv).
"""
from common import dataset_args, out_dir, over_seed_runs, parser, setting, write_over_seeds

from attnlab import measure_attention
from attnlab.outputs import staged_outputs
from attnlab.plots import save_figure
from attnlab.plots import seeds as plots
from attnlab.studies import FEATURE_METRICS

if __name__ == "__main__":
    args = parser(__doc__).parse_args()

    def study(paths, labels):
        return measure_attention(paths, labels, num_images=args.images, metrics=FEATURE_METRICS,
                                 **dataset_args(args)).frame

    runs = over_seed_runs(study, args.dataset)
    caption = setting(args.dataset, args.images)
    metrics = ["token_cosine", "effective_rank"]
    labels = ["mean cosine similarity of patch tokens", "effective rank of patch tokens"]
    with staged_outputs(out_dir("07_feature_diversity", args.dataset)) as stage:
        summary, diff = write_over_seeds(stage, "feature_diversity", runs)
        save_figure(plots.per_layer(summary, metrics, labels, "Feature diversity after every block", caption),
                    stage, "feature_diversity")
        save_figure(plots.differences(diff, metrics, ["difference in cosine", "difference in effective rank"],
                                      "Paired differences over seeds", caption), stage, "feature_diversity_differences")
    print(summary[summary["metric"] == "token_cosine"].pivot_table(index="model", columns="layer", values="value").round(3))
