"""Claim 3 (ReViT): more robust to translation and scale.

Accuracy and consistency against horizontal shift, over a (dx, dy) grid, and against
scale, for the three families, bootstrap 95% intervals. Writes figures/03_robustness/.
"""
import pandas as pd
from common import dataset_args, main_checkpoints, out_dir, parser

from attnlab.studies.robustness import measure_robustness, write_robustness

if __name__ == "__main__":
    p = parser(__doc__)
    p.set_defaults(images=500)  # 65 views of each image per model
    args = p.parse_args()
    ckpts = main_checkpoints(args.dataset)
    common = dict(num_images=args.images, **dataset_args(args))
    line = measure_robustness(list(ckpts.values()), list(ckpts), shifts=[0, 1, 2, 3, 4, 6, 8, 12],
                              scales=[0.5, 0.625, 0.75, 0.875, 1.0, 1.125, 1.25, 1.5], **common).frame
    grid = measure_robustness(list(ckpts.values()), list(ckpts), shifts=[-8, -4, -2, 0, 2, 4, 8],
                              direction="grid", scales=[1.0], **common).frame
    grid = grid[grid["transform"] == "shift-grid"]
    for path in write_robustness(pd.concat([line, grid], ignore_index=True), out_dir("03_robustness", args.dataset)):
        print(path)
