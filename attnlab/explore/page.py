"""``explore.html``: one self-contained file (inline style and script, data embedded), safe for untrusted names.

Nothing in the page leaves the file: no external script, font, style or request, and a
Content-Security-Policy (``default-src 'none'``, images only from ``data:``, script and
style only with the page's nonce) stops anything that slipped in. Every string from a
checkpoint or a folder (labels, class names, file names) reaches the page only as JSON
data that the script inserts with ``textContent``; the JSON is embedded with ``<``, ``>``
and ``&`` written as ``\\u003c`` ... so no ``</script>`` or ``<!--`` in a name can end the
data block; the one string in markup (the title) goes through ``html.escape``.

**Data layout** (``#attnlab-data``; binary arrays are little-endian, base64, C order). Per
model, ``blocks`` (every attention layer in forward order: its path, heads, and which of
``shapes`` it has) and ``shapes`` (each distinct layer geometry once: ``windows``,
``queries`` per window, ``keys``, the leading ``prefix_queries`` / ``prefix_keys`` without a
position, ``query_cells`` int16 ``[W * Nq, 4]`` and ``key_cells`` int16 ``[W, Nk, 4]`` as
``(y0, x0, h, w)`` pixels (``layers.py``), the uniform reference per query and per image).
For each attention kind (``applied``; ReViT also ``own``) and stored layer ``k``
(``layers``): ``rows[k].q`` uint8 ``[n, H+1, R, K - P]`` (``R = W * Nq`` query rows, row
``w * Nq + i`` is query ``i`` of window ``w``; head ``H`` = the mean over heads; keys with a
position; ``quantise.py``), ``rows[k].scale`` float32 ``[n, H+1, R]``, ``rows[k].prefix``
float32 ``[n, H+1, R, P]``; for each layer ``l``: ``metrics[l].query_mad`` / ``query_entropy``
float32 ``[n, H+1, R]`` and ``image_mad`` / ``image_entropy`` float32 ``[n, H+1]``;
``rollout`` uint8 ``[n, G]`` (over the keys of layer 0's cells) and ``gradcam`` uint8
``[n, h, w]`` (each map scaled to its maximum), or null with the reason in ``missing``.
Images are PNG, once per input size. A hover finds the query row whose cell holds the
mouse in the selected layer and fills each of its keys' cells with that key's byte:
alpha = ``q``, colour = inferno(``q``); a Swin query's keys are its window's, at their
true image positions (wrapped regions of shifted windows at the opposite border).
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
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..studies.attribution import rollout_queries
from .collect import ModelView
from .quantise import quantise_map

COLORMAP = "inferno"
QUANTISATION = ("uint8 per query row over the keys with a position, with a per-row float32 scale: "
                "q = round(255 A / max over those keys of A); prefix keys kept as float32")


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


def _shapes(plan) -> Tuple[List[Dict[str, Any]], List[int]]:
    """Each distinct layer geometry once (cells, uniform reference), and which one every layer has."""
    shapes: List[Dict[str, Any]] = []
    seen: Dict[str, int] = {}
    index = []
    for b in plan.blocks:
        mad, entropy = b.uniform()
        with np.errstate(invalid="ignore"):
            image_mad = float(np.nanmean(mad)) if np.isfinite(mad).any() else None
        shape = {"windows": b.windows, "queries": b.queries, "keys": b.keys, "prefix_queries": b.prefix_queries,
                 "prefix_keys": b.prefix_keys, "query_cells": b64(b.query_cells(plan.size), "i2"),
                 "key_cells": b64(b.key_cells(plan.size), "i2"),
                 "uniform": {"query_mad": b64(mad, "f4"), "query_entropy": b64(entropy, "f4"),
                             "image_mad": image_mad, "image_entropy": float(entropy.mean())}}
        key = json.dumps(shape, sort_keys=True)
        index.append(seen.setdefault(key, len(shapes)))
        if index[-1] == len(shapes):
            shapes.append(shape)
    return shapes, index


def _overlay(view: ModelView, name: str) -> Optional[str]:
    maps = getattr(view, name)
    return None if maps is None else b64(quantise_map(maps), "u1")


def model_payload(view: ModelView, picture: int) -> Dict[str, Any]:
    """One model's part of the page data."""
    plan = view.plan
    m = plan.model
    probs, pred = view.probabilities, view.predictions
    predictions = [{"class": view.classes[int(c)], "p": float(probs[i, c])} for i, c in enumerate(pred)]
    rows = {k: [{"q": b64(r.q, "u1"), "scale": b64(r.scale, "f4"), "prefix": b64(r.prefix, "f4")} for r in per_layer]
            for k, per_layer in view.rows.items()}
    metrics = {k: [{"query_mad": b64(qm, "f4"), "query_entropy": b64(qe, "f4"), "image_mad": b64(im, "f4"),
                    "image_entropy": b64(ie, "f4")}
                   for qm, qe, im, ie in zip(t.query_mad, t.query_entropy, t.image_mad, t.image_entropy)]
               for k, t in view.metrics.items()}
    shapes, shape_of = _shapes(plan)
    blocks = [{"name": b.path, "geometry": b.geometry, "heads": b.heads, "shape": s, "about": b.about, "note": b.note}
              for b, s in zip(plan.blocks, shape_of)]
    queries = rollout_queries(m.model)
    rollout_of = "patch tokens (mean)" if queries is None else \
        " and ".join(plan.prefix_names[i] for i in queries) + " token"
    lay = plan.layout
    kinds = sorted({b.geometry for b in plan.blocks})
    return {
        "label": m.label, "arch": m.spec.arch, "checkpoint": m.checkpoint, "family": m.spec.family,
        "size": list(plan.size), "picture": picture, "prefix_names": plan.prefix_names,
        "about": (f"{lay.grid_size[0]}x{lay.grid_size[1]} patches of {lay.patch_size[0]}x{lay.patch_size[1]} px"
                  if lay is not None else " and ".join(kinds) + " attention"),
        "depth": plan.depth, "heads": plan.heads, "layers": plan.layers, "blocks": blocks, "shapes": shapes,
        "sources": plan.sources, "predictions": predictions, "rows": rows, "metrics": metrics,
        "rollout": _overlay(view, "rollout"), "rollout_of": rollout_of, "rollout_shape": shape_of[0],
        "gradcam": _overlay(view, "gradcam"), "cam_layer": plan.cam_layer, "missing": plan.missing,
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
<footer>Overlay: the selected query's attention over its keys, each key drawn as its cell in the image
(Swin: the keys of the query's window at their true positions; MViTv2: the tiles of the pooled key grid),
brightest key = full colour (inferno); stored as @QUANT@. Mean attention distance: pixels, queries with a
position, renormalised over keys with a position; entropy: nats over all keys; uniform attention dashed.
Written by attnlab explore.</footer>
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
