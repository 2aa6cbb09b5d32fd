"""``explore.html``: one self-contained file (inline style and script, data embedded), safe for untrusted names.

Nothing in the page leaves the file: no external script, font, style or request, and a
Content-Security-Policy (``default-src 'none'``, images only from ``data:``, script and
style only with the page's nonce) stops anything that slipped in. Every string from a
checkpoint or a folder (labels, class names, file names) reaches the page only as JSON
data that the script inserts with ``textContent``; the JSON is embedded with ``<``, ``>``
and ``&`` written as ``\\u003c`` ... so no ``</script>`` or ``<!--`` in a name can end the
data block; the one string in markup (the title) goes through ``html.escape``.

**Data layout** (``#attnlab-data``; binary arrays are little-endian, base64, C order):
per model, for each attention kind (``applied``; ReViT also ``own``)
``rows.q`` uint8 ``[n, K, H+1, N, G]`` (``K`` stored blocks, head ``H`` = the mean over
heads, query ``i`` over the patch keys; ``quantise.py``), ``rows.scale`` float32
``[n, K, H+1, N]``, ``rows.prefix`` float32 ``[n, K, H+1, N, P]``; ``metrics.query_mad`` /
``query_entropy`` float32 ``[n, L, H+1, N]`` and ``image_mad`` / ``image_entropy`` float32
``[n, L, H+1]``; ``rollout`` uint8 ``[n, G]`` and ``gradcam`` uint8 ``[n, h, w]`` (each map
scaled to its maximum). Images are PNG, once per input size. A hover draws the query's
``G`` bytes straight into the overlay's pixels: alpha = ``q``, colour = inferno(``q``).
"""
from __future__ import annotations

import base64
import html
import io
import json
import re
import secrets
from functools import lru_cache
from importlib import resources
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from ..studies.attribution import rollout_queries
from .collect import ModelView
from .quantise import quantise_map

COLORMAP = "inferno"
QUANTISATION = ("uint8 per query row over the patch keys with a per-row float32 scale: "
                "q = round(255 A / max over patches of A); prefix keys kept as float32")


def b64(array: np.ndarray, dtype: str) -> str:
    """An array as base64 of its little-endian C-order bytes."""
    return base64.b64encode(np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()).decode()


@lru_cache(maxsize=1)
def colormap_lut() -> bytes:
    """256 RGB entries of the overlay's colour map (matplotlib's inferno)."""
    from matplotlib import colormaps

    rgb = colormaps[COLORMAP](np.arange(256) / 255.0)[:, :3]
    return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8).tobytes()


def png_base64(image: np.ndarray) -> str:
    """``[C, h, w]`` in [0, 1] -> base64 PNG (grey for one channel)."""
    from PIL import Image

    arr = np.clip(np.rint(np.asarray(image, dtype=np.float64) * 255), 0, 255).astype(np.uint8)
    arr = arr[0] if arr.shape[0] == 1 else np.transpose(arr, (1, 2, 0))
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)
    return base64.b64encode(buf.getvalue()).decode()


def model_payload(view: ModelView, picture: int) -> Dict[str, Any]:
    """One model's part of the page data."""
    plan = view.plan
    lay, m = plan.layout, plan.model
    probs, pred = view.probabilities, view.predictions
    predictions = [{"class": view.classes[int(c)], "p": float(probs[i, c])} for i, c in enumerate(pred)]
    rows = {k: {"q": b64(r.q, "u1"), "scale": b64(r.scale, "f4"), "prefix": b64(r.prefix, "f4")}
            for k, r in view.rows.items()}
    metrics = {k: {"query_mad": b64(t.query_mad, "f4"), "query_entropy": b64(t.query_entropy, "f4"),
                   "image_mad": b64(t.image_mad, "f4"), "image_entropy": b64(t.image_entropy, "f4")}
               for k, t in view.metrics.items()}
    queries = rollout_queries(m.model)
    rollout_of = "patch tokens (mean)" if queries is None else \
        " and ".join(plan.prefix_names[i] for i in queries) + " token"
    return {
        "label": m.label, "arch": m.spec.arch, "checkpoint": m.checkpoint, "family": m.spec.family,
        "size": list(plan.size), "picture": picture, "prefix": lay.num_prefix_tokens,
        "prefix_names": plan.prefix_names, "grid": list(lay.grid_size), "patch": list(lay.patch_size),
        "tokens": lay.num_tokens, "depth": plan.depth, "heads": plan.heads, "layers": plan.layers,
        "sources": plan.sources, "predictions": predictions, "rows": rows, "metrics": metrics,
        "uniform": {"query_mad": b64(view.uniform_query_mad, "f4"), "image_mad": view.uniform_image_mad,
                    "entropy": view.uniform_entropy},
        "rollout": b64(quantise_map(view.rollout), "u1"), "rollout_of": rollout_of,
        "gradcam": b64(quantise_map(view.gradcam), "u1"), "cam_layer": view.cam_layer,
    }


def page_data(views: Sequence[ModelView], pictures: Sequence[np.ndarray], picture_of: Sequence[int],
              names: Sequence[str], labels: Sequence[Optional[str]]) -> Dict[str, Any]:
    """The whole page's data: images (PNG per input), their names and labels, and every model."""
    return {
        "version": 1,
        "quantisation": QUANTISATION,
        "lut": base64.b64encode(colormap_lut()).decode(),
        "images": [{"name": str(n), "label": None if lab is None else str(lab)} for n, lab in zip(names, labels)],
        "pictures": [{"size": list(p.shape[-2:]), "png": [png_base64(img) for img in p]} for p in pictures],
        "models": [model_payload(v, g) for v, g in zip(views, picture_of)],
    }


def script_json(data: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">``: no ``<``, ``>`` or ``&`` at all."""
    text = json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _asset(name: str) -> str:
    return (resources.files("attnlab.explore") / "assets" / name).read_text(encoding="utf-8")


TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'nonce-@NONCE@'; script-src 'nonce-@NONCE@'; base-uri 'none'; form-action 'none'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="attnlab explore">
<title>@TITLE@</title>
<link rel="icon" href="data:,">
<style nonce="@NONCE@">
@STYLE@</style>
</head>
<body>
<header>
<h1>@TITLE@</h1>
<div class="controls" id="controls"></div>
<div class="thumbs" id="thumbs"></div>
<p class="imageinfo" id="image-info"></p>
</header>
<main id="panels"></main>
<footer>Overlay: the selected query's attention over the patches, brightest patch = full colour (inferno);
stored as @QUANT@. Mean attention distance: pixels, patch queries, renormalised over patch keys;
entropy: nats over all tokens; uniform attention dashed. Written by attnlab explore.</footer>
<script type="application/json" id="attnlab-data">@DATA@</script>
<script nonce="@NONCE@">
@SCRIPT@</script>
</body>
</html>
"""


def render_page(data: Dict[str, Any], title: str) -> str:
    """The HTML of the page for ``data`` (see ``page_data``), titled ``title`` (escaped)."""
    nonce = secrets.token_urlsafe(18)
    parts = {"@NONCE@": nonce, "@TITLE@": html.escape(title), "@QUANT@": html.escape(QUANTISATION),
             "@STYLE@": _asset("explore.css"), "@SCRIPT@": _asset("explore.js")}
    parts["@DATA@"] = script_json(data)
    # one pass: a marker inside a title, a style or the data is text, never substituted again
    return re.sub("@(NONCE|TITLE|QUANT|STYLE|SCRIPT|DATA)@", lambda m: parts[m.group(0)], TEMPLATE)


def page_title(labels: List[str]) -> str:
    """``attnlab explore: ViT vs ReViT``."""
    return "attnlab explore: " + " vs ".join(labels)
