"""Where a ViT looks for its decision: GradCAM-family maps (pytorch-grad-cam), Chefer's
gradient-weighted attention rollout, attention rollout, and how faithful each map is.

    cams = compute_cam(model, x, "gradcam", targets=[3, 1])      # [B, H, W] in [0, 1]
    rel = compute_cam(model, x, "chefer", targets=[3, 1])         # same shape, attention x gradient
    grid = attention_rollout(model, x)                            # [B, gh, gw]
    result = explain(["vit.pt", (net, spec)], images=["img/"], methods=["gradcam", "chefer"],
                     faithfulness="road,perturbation,deletion")
    result.figures()["gradcam"]                                   # the grid, for a notebook
    result.save("out/gradcam")    # gradcam.csv, gradcam_maps.npz, gradcam.png/.pdf, faithfulness_curves.png/.pdf

One module per concern: ``options`` (methods, protocols, targets), ``grid`` (tokens -> patch
grid), ``layers`` (target layer and its tap), ``cam`` (pytorch-grad-cam), ``attention_gradients``
(chefer, attn-grad), ``rollout``, ``faithfulness`` (ROAD, confidence drop), ``perturbation``
(perturbation, deletion and insertion curves), ``result`` (tables, arrays, figures) and
``study`` (``explain``).
"""
from .attention_gradients import chefer_rollout, gradient_attention_maps, gradient_relevance
from .cam import compute_cam
from .faithfulness import METRICS, ROAD_PERCENTILES, attribution_metrics
from .grid import make_reshape_transform, tokens_to_grid
from .layers import auto_layer, resolve_layer
from .options import FAITHFULNESS, METHODS, ROLLOUT, CamMethod, parse_faithfulness, parse_methods, resolve_targets
from .perturbation import Curve, deletion_insertion, perturbation_curves
from .result import AttributionResult, ModelAttribution
from .rollout import attention_rollout, rollout, rollout_queries, upsample_maps
from .study import explain

__all__ = [
    "FAITHFULNESS", "METHODS", "METRICS", "ROAD_PERCENTILES", "ROLLOUT", "AttributionResult", "CamMethod", "Curve",
    "ModelAttribution", "attention_rollout", "attribution_metrics", "auto_layer", "chefer_rollout", "compute_cam",
    "deletion_insertion", "explain", "gradient_attention_maps", "gradient_relevance", "make_reshape_transform",
    "parse_faithfulness", "parse_methods", "perturbation_curves", "resolve_layer", "resolve_targets", "rollout",
    "rollout_queries", "tokens_to_grid", "upsample_maps",
]
