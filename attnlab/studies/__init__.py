"""The studies: what attnlab measures, each a function returning a :class:`StudyResult`.

    measure_attention   globality and entropy of attention (``attnlab globality`` / ``entropy``)
    measure_robustness  accuracy and consistency under exact shifts and scales (``attnlab robustness``)
    explain             GradCAM-family maps, attention rollout, faithfulness (``attnlab gradcam``)
    measure_similarity  linear CKA between block outputs and the logit lens (``attnlab similarity``)

Every study takes model sources and an image selection (``inputs``) and returns a result
with ``.frame``, ``.notes``, ``.figures()`` and ``.save(out)`` (``result``). Names load on
first use, so importing one study does not import the others. Under torchrun the attention,
robustness and evaluation studies measure a share of the images per process and merge
their statistics exactly (``sharding``).
"""
from __future__ import annotations

from .._lazy import lazy_exports

_API = {
    "measure_attention": "attention", "AttentionResult": "attention", "GlobalityResult": "attention",
    "EntropyResult": "attention", "GLOBALITY_METRICS": "attention", "ENTROPY_METRICS": "attention",
    "FEATURE_METRICS": "attention",
    "measure_robustness": "robustness", "RobustnessResult": "robustness",
    "explain": "attribution", "AttributionResult": "attribution",
    "measure_similarity": "similarity", "SimilarityResult": "similarity",
    "AttentionAnalyser": "stream", "analyse_attention": "stream",
    "ImageSelection": "inputs", "LoadedModel": "inputs", "load_models": "inputs",
    "StudyResult": "result",
}

__all__ = sorted(_API)


__getattr__, __dir__ = lazy_exports(__name__, _API)
