"""Claim 2 (CB): context broadcasting lowers the entropy of the learned attention.

Per-layer attention entropy (nats and / log N, 95% CI over images) and per-head heatmaps,
ViT vs ViT+CB (ReViT alongside). Writes figures/02_entropy/.
"""
from common import dataset_args, main_checkpoints, out_dir, parser

import attnlab
from attnlab.studies import ENTROPY_METRICS

if __name__ == "__main__":
    args = parser(__doc__).parse_args()
    ckpts = main_checkpoints(args.dataset)
    result = attnlab.measure_attention(list(ckpts.values()), list(ckpts), num_images=args.images,
                                       metrics=ENTROPY_METRICS, **dataset_args(args))
    for path in result.save(out_dir("02_entropy", args.dataset)):
        print(path)
