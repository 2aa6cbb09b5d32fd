"""ReViT's multiscale families against their bases: ReSwin vs Swin and ReMViTv2 vs MViTv2.

The four micro models of `train_models.py --only multiscale` (same recipe; the bases are the
same models with residual=false, i.e. timm's Swin and MViTv2): top-1 on the whole test set
from each run's record, then mean attention distance and entropy per layer on test images,
on each layer's window / pooled geometry. Writes figures/09_multiscale/.
"""
import pandas as pd
from common import checkpoint, dataset_args, metrics_csv, out_dir, parser

import attnlab
from attnlab.studies import ENTROPY_METRICS, GLOBALITY_METRICS
from attnlab.tables import tidy, write_csv

RUNS_BY_LABEL = {"ReSwin": "reswin_micro", "Swin": "swin_micro", "ReMViTv2": "remvitv2_micro",
                 "MViTv2": "mvitv2_micro"}

if __name__ == "__main__":
    args = parser(__doc__).parse_args()
    paths = {label: str(checkpoint(run, args.dataset)) for label, run in RUNS_BY_LABEL.items()}  # runs/, else committed
    result = attnlab.measure_attention(list(paths.values()), list(paths), num_images=args.images,
                                       metrics=GLOBALITY_METRICS[:1] + ENTROPY_METRICS[:2], **dataset_args(args))
    rows = []
    for label, run in RUNS_BY_LABEL.items():
        _, spec = attnlab.load_model(paths[label])
        epochs = pd.read_csv(metrics_csv(run, args.dataset))
        rows.append(dict(model=label, checkpoint=result.frame[result.frame["model"] == label]["checkpoint"].iloc[0],
                         arch=spec.arch, metric="top1", value=float(spec.provenance["metrics"]["top1"]),
                         n_images=10000))
        rows.append(dict(model=label, checkpoint=rows[-1]["checkpoint"], arch=spec.arch, metric="train_seconds",
                         value=float(epochs["seconds"].sum()), n_images=0))
    out = out_dir("09_multiscale", args.dataset)
    for path in result.save(out):
        print(path)
    write_csv(tidy(pd.DataFrame(rows)), out / "top1.csv")
    print(out / "top1.csv")
    summary = result.frame[(result.frame["head"] == -1)].pivot_table(index="model", columns=["metric", "layer"],
                                                                     values="value", sort=False)
    print(pd.DataFrame(rows).pivot_table(index="model", columns="metric", values="value", sort=False).round(2))
    print(summary.round(3).to_string())
