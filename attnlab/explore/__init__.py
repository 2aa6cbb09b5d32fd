"""``attnlab explore``: point at a patch and see where it looks, layer by layer, head by head, model by model.

    result = explore(["vit.pt", "revit.pt"], ["ViT", "ReViT"], images=["img/"], layers=[0, 5, 11])
    result.save("out/explore")      # out/explore/explore.html: one file, opens offline from disk

One module per concern: ``plan`` (what of each model is shown, ``--layers``), ``budget``
(the page's size, known before any forward pass), ``collect`` (capture, metrics,
rollout, GradCAM), ``quantise`` (uint8 rows), ``page`` (the HTML, data layout and
escaping), ``result`` (``ExploreResult``) and ``study`` (``explore``).
"""
from .budget import estimate_bytes
from .plan import default_layers
from .result import PAGE, ExploreResult
from .study import DEFAULT_NUM_IMAGES, MAX_BYTES, explore

__all__ = ["DEFAULT_NUM_IMAGES", "MAX_BYTES", "PAGE", "ExploreResult", "default_layers", "estimate_bytes", "explore"]
