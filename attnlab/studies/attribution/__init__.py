"""Where a ViT looks for its decision: GradCAM-family maps (pytorch-grad-cam) and attention rollout.

    cams = compute_cam(model, x, "gradcam", targets=[3, 1])      # [B, H, W] in [0, 1]
    grid = attention_rollout(model, x)                            # [B, gh, gw]
    result = explain(["vit.pt", (net, spec)], images=["img/"], methods=["gradcam", "eigencam"])
    result.figures()["gradcam"]                                   # the grid, for a notebook
    result.save("out/gradcam")    # gradcam.csv, gradcam_maps.npz, gradcam.png/.pdf

One module per concern: ``options`` (methods, targets), ``grid`` (tokens -> patch grid),
``layers`` (target layer and its tap), ``cam`` (pytorch-grad-cam), ``rollout``,
``faithfulness`` (ROAD, confidence drop), ``result`` (tables, arrays, figure) and
``study`` (``explain``).
"""
from .cam import compute_cam
from .faithfulness import METRICS, ROAD_PERCENTILES, attribution_metrics
from .grid import make_reshape_transform, tokens_to_grid
from .layers import auto_layer, resolve_layer
from .options import METHODS, ROLLOUT, CamMethod, parse_methods, resolve_targets
from .result import AttributionResult, ModelAttribution
from .rollout import attention_rollout, rollout, rollout_queries, upsample_maps
from .study import explain

__all__ = [
    "METHODS", "METRICS", "ROAD_PERCENTILES", "ROLLOUT", "AttributionResult", "CamMethod", "ModelAttribution",
    "attention_rollout", "attribution_metrics", "auto_layer", "compute_cam", "explain", "make_reshape_transform",
    "parse_methods", "resolve_layer", "resolve_targets", "rollout", "rollout_queries", "tokens_to_grid",
    "upsample_maps",
]
