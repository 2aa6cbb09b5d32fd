"""Metrics of what attention does: per-head attention statistics, feature diversity, and
a streaming accumulator. Plain tensors plus a :class:`~attnlab.layout.TokenLayout` in,
no model code (the definitions: README, "Attention metrics").

Modules: :mod:`.attention` (per-head metrics of one map), :mod:`.streaming`
(:class:`AttentionStats`, many batches), :mod:`.features` (feature diversity),
:mod:`.tokens` (high-norm tokens and the attention they draw), :mod:`.similarity`
(linear CKA with the unbiased HSIC, in minibatches), :mod:`.softmax` (the softmax Jacobian); both :mod:`.attention` and :mod:`.streaming` are
built on :mod:`.kernels` (the arithmetic) and :mod:`.validation` (the input checks).
"""
from __future__ import annotations

from .attention import (
    MetricInputError,
    attention_entropy,
    attention_entropy_per_image,
    globality_curve,
    globality_curve_per_image,
    mean_attention_distance,
    mean_attention_distance_per_image,
    nonlocality,
    nonlocality_per_image,
    prefix_mass,
    prefix_mass_per_image,
)
from .features import effective_rank, token_cosine_similarity
from .similarity import MinibatchCKA, gram_linear, hsic_matrix, linear_cka, unbiased_hsic
from .softmax import softmax_jacobian_sq_norm, uniform_jacobian_sq_norm
from .streaming import DEFAULT_RADII, HIGH_NORM_METRICS, METRIC_NAMES, NORM_METRICS, ROW_COLUMNS, AttentionStats
from .tokens import high_norm_mass, high_norm_share, high_norm_tokens, norm_quantiles, token_norms

__all__ = [
    "AttentionStats",
    "DEFAULT_RADII",
    "HIGH_NORM_METRICS",
    "METRIC_NAMES",
    "MetricInputError",
    "MinibatchCKA",
    "NORM_METRICS",
    "ROW_COLUMNS",
    "attention_entropy",
    "attention_entropy_per_image",
    "effective_rank",
    "globality_curve",
    "globality_curve_per_image",
    "gram_linear",
    "high_norm_mass",
    "high_norm_share",
    "high_norm_tokens",
    "hsic_matrix",
    "linear_cka",
    "mean_attention_distance",
    "mean_attention_distance_per_image",
    "nonlocality",
    "nonlocality_per_image",
    "norm_quantiles",
    "prefix_mass",
    "prefix_mass_per_image",
    "softmax_jacobian_sq_norm",
    "token_cosine_similarity",
    "token_norms",
    "unbiased_hsic",
    "uniform_jacobian_sq_norm",
]
