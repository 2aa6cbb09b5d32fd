"""GradCAM, GradCAM++ and attention rollout for the three families on the same test images.

Writes figures/04_gradcam/ (grid of overlays, raw maps, ROAD and confidence-drop CSV).
"""
from common import dataset_args, main_checkpoints, out_dir, parser

from attnlab.studies.attribution import explain

if __name__ == "__main__":
    p = parser(__doc__)
    p.set_defaults(images=6)
    args = p.parse_args()
    ckpts = main_checkpoints(args.dataset)
    result = explain(list(ckpts.values()), list(ckpts), num_images=args.images, methods=["gradcam", "gradcam++"],
                     **dataset_args(args))
    for path in result.save(out_dir("04_gradcam", args.dataset)):
        print(path)
