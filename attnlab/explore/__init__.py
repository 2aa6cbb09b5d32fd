"""``attnlab explore``: point at a patch and see where it looks, layer by layer, head by head, model by model.

    result = explore(["vit.pt", "revit.pt"], ["ViT", "ReViT"], images=["img/"], layers=[0, 5, 11])
    result.save("out/explore")      # out/explore/explore.html: one file, opens offline from disk

Every family capture supports is shown in image coordinates: one patch grid (ViT, DeiT,
ReViT, CB, EVA, BEiT, RelPos, Hugging Face ViTs), CaiT (patch blocks; class attention from
the class token), Swin (a query's window of keys, where they are in the image, wrapped
regions of shifted windows included) and MViTv2 (queries and keys on their pooled grids).

One module per concern: ``plan`` (what of each model is shown, ``--layers``), ``layers``
(each attention layer's shape, geometry and pixel cells), ``budget`` (the page's size,
known before any image runs), ``collect`` (capture, metrics, rollout, GradCAM),
``quantise`` (uint8 rows), ``page`` (the HTML, data layout and escaping), ``result``
(``ExploreResult``) and ``study`` (``explore``).
"""
from .budget import estimate_bytes
from .plan import default_layers
from .result import PAGE, ExploreResult
from .study import DEFAULT_NUM_IMAGES, MAX_BYTES, explore

__all__ = ["DEFAULT_NUM_IMAGES", "MAX_BYTES", "PAGE", "ExploreResult", "default_layers", "estimate_bytes", "explore"]
