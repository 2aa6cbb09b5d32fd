"""Claim 1 (ReViT): residual attention keeps attention local in deep layers.

Mean attention distance of every head against its layer, ViT vs ReViT vs ViT+CB, and the
globality curves, on test images. Writes figures/01_globality/.
"""
from common import dataset_args, main_checkpoints, out_dir, parser

import attnlab
from attnlab.studies import GLOBALITY_METRICS

if __name__ == "__main__":
    args = parser(__doc__).parse_args()
    ckpts = main_checkpoints(args.dataset)
    result = attnlab.measure_attention(list(ckpts.values()), list(ckpts), num_images=args.images,
                                       metrics=GLOBALITY_METRICS, **dataset_args(args))
    for path in result.save(out_dir("01_globality", args.dataset)):
        print(path)
