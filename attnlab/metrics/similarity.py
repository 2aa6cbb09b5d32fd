"""Linear CKA between representations, with the unbiased HSIC estimator, in minibatches.

Centred kernel alignment compares two sets of features of the same ``n`` images, ``X``
``[n, p]`` and ``Y`` ``[n, q]`` (any widths), through their Gram matrices ``K = X X^T``
and ``L = Y Y^T``::

    CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))

It is invariant to orthogonal transforms and isotropic scaling of either side, and 1
when one side is such a transform of the other (Kornblith et al. 2019).

HSIC is the unbiased estimator of Song et al. (2012), as Nguyen, Raghu & Kornblith (2021,
"Do wide and deep networks learn the same things?") use it; with ``K~``, ``L~`` the Gram
matrices with their diagonals set to 0 and ``1`` the all-ones vector (``n >= 4``)::

    HSIC_1(K, L) = [ tr(K~ L~) + (1'K~1)(1'L~1) / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1 ] / (n (n-3))

Minibatch CKA (Nguyen et al., section 3.1) keeps memory independent of the number of
images: for each minibatch ``i`` of ``n_i`` images compute ``HSIC_1`` of that minibatch's
Gram matrices, then average over the ``k`` minibatches, each weighing the same::

    CKA_minibatch = mean_i HSIC_1(K_i, L_i) / sqrt(mean_i HSIC_1(K_i, K_i) mean_i HSIC_1(L_i, L_i))

With one minibatch this is the full-batch unbiased CKA. :class:`MinibatchCKA` does this
for a stack of ``S`` representations at once (every layer of every model): all ``S x S``
pairs from one ``[S, n^2] @ [n^2, S]`` product per minibatch, summed in float64.
Features are centred per minibatch before the Gram matrix: ``HSIC_1`` is exactly
invariant to translating the features, and centring spares the float64 sums a cancellation.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .validation import MetricInputError, shape_str

__all__ = ["MIN_BATCH", "MinibatchCKA", "gram_linear", "hsic_matrix", "linear_cka", "unbiased_hsic"]

#: The unbiased HSIC divides by n (n - 3): a minibatch needs at least 4 images.
MIN_BATCH = 4


def gram_linear(features: Tensor) -> Tensor:
    """Linear Gram matrix ``K = X X^T`` ``[n, n]`` float64 of features ``[n, ...]`` (flattened per
    image: ``[n, G, C]`` patch tokens give ``K_ij = sum_g <x_ig, x_jg>``), centred first."""
    if not isinstance(features, Tensor) or features.dim() < 2 or not features.is_floating_point():
        what = shape_str(features) if isinstance(features, Tensor) else type(features).__name__
        raise MetricInputError(f"features must be a floating-point tensor [n, ...], got {what}")
    x = features.reshape(features.shape[0], -1).to(torch.float64)
    x = x - x.mean(0, keepdim=True)  # HSIC_1 is translation-invariant: centring only helps the numerics
    return x @ x.T


def _checked_grams(grams: Tensor, what: str) -> Tensor:
    if not isinstance(grams, Tensor) or grams.dim() != 3 or grams.shape[-1] != grams.shape[-2]:
        got = shape_str(grams) if isinstance(grams, Tensor) else type(grams).__name__
        raise MetricInputError(f"{what} must be a stack of Gram matrices [S, n, n], got {got}")
    if grams.shape[-1] < MIN_BATCH:
        raise MetricInputError(f"the unbiased HSIC needs at least {MIN_BATCH} images per minibatch, "
                               f"got {grams.shape[-1]}")
    return grams.to(torch.float64)


def hsic_matrix(grams_a: Tensor, grams_b: Optional[Tensor] = None) -> Tensor:
    """``HSIC_1`` between every Gram matrix of ``grams_a`` ``[Sa, n, n]`` and of ``grams_b``
    ``[Sb, n, n]`` (default: ``grams_a``), ``[Sa, Sb]`` float64. The matrices must be symmetric."""
    ka = _checked_grams(grams_a, "grams_a")
    kb = ka if grams_b is None else _checked_grams(grams_b, "grams_b")
    if kb.shape[-1] != ka.shape[-1]:
        raise MetricInputError(f"Gram matrices of {ka.shape[-1]} and {kb.shape[-1]} images: "
                               "HSIC compares the same images")
    n = ka.shape[-1]
    eye = torch.eye(n, dtype=torch.bool, device=ka.device)
    ka = ka.masked_fill(eye, 0.0)                      # K~: the diagonal set to 0
    kb = ka if grams_b is None else kb.masked_fill(eye, 0.0)
    rows_a, rows_b = ka.sum(-1), kb.sum(-1)            # K~ 1: [S, n]
    total_a, total_b = rows_a.sum(-1), rows_b.sum(-1)  # 1'K~1: [S]
    trace = ka.reshape(ka.shape[0], -1) @ kb.reshape(kb.shape[0], -1).T  # tr(K~ L~) = sum_ij K~_ij L~_ij (symmetric)
    return (trace + torch.outer(total_a, total_b) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * (rows_a @ rows_b.T)) / (n * (n - 3))  # 1'K~L~1 = (K~1).(L~1)


def unbiased_hsic(k: Tensor, l: Tensor) -> Tensor:
    """``HSIC_1(K, L)`` of two ``[n, n]`` Gram matrices (a 0-d float64 tensor)."""
    return hsic_matrix(k[None], l[None])[0, 0]


def linear_cka(x: Tensor, y: Tensor) -> Tensor:
    """Full-batch linear CKA of features ``x`` ``[n, ...]`` and ``y`` ``[n, ...]`` with ``HSIC_1`` (0-d float64)."""
    if x.shape[0] != y.shape[0]:
        raise MetricInputError(f"x has {x.shape[0]} images and y {y.shape[0]}: CKA compares the same images")
    h = hsic_matrix(torch.stack([gram_linear(x), gram_linear(y)]))
    return h[0, 1] / (h[0, 0] * h[1, 1]).sqrt()


class MinibatchCKA:
    """Minibatch linear CKA between ``S`` representations of the same images, all pairs at once.

    ``update(grams)`` takes one minibatch's Gram matrices ``[S, n, n]`` (the same ``S``
    representations, in the same order, every time; ``n`` may change, e.g. a smaller last
    batch, but must be at least :data:`MIN_BATCH`). ``cka()`` is ``[S, S]``. Memory: one
    ``[S, S]`` float64 sum, whatever the number of images.
    """

    def __init__(self) -> None:
        self._hsic_sum: Optional[Tensor] = None
        self.n_batches = 0
        self.n_images = 0

    def update(self, grams: Tensor) -> None:
        """Add one minibatch: ``sum += HSIC_1(K_a, K_b)`` for every pair ``(a, b)``."""
        h = hsic_matrix(grams)
        if self._hsic_sum is None:
            self._hsic_sum = torch.zeros_like(h)
        elif self._hsic_sum.shape != h.shape:
            raise MetricInputError(f"minibatch of {h.shape[0]} representations, earlier ones had "
                                   f"{self._hsic_sum.shape[0]}")
        self._hsic_sum += h
        self.n_batches += 1
        self.n_images += int(grams.shape[-1])

    def hsic(self) -> Tensor:
        """``mean_i HSIC_1`` over the minibatches, ``[S, S]`` float64 on the CPU."""
        if self._hsic_sum is None:
            raise MetricInputError("MinibatchCKA has seen no minibatch")
        return (self._hsic_sum / self.n_batches).cpu()

    def cka(self) -> Tensor:
        """``CKA[a, b] = mean HSIC(a, b) / sqrt(mean HSIC(a, a) mean HSIC(b, b))``, ``[S, S]`` (NaN where a
        representation has no spread: HSIC(a, a) <= 0)."""
        h = self.hsic()
        d = h.diagonal()
        d = torch.where(d > 0, d, torch.full_like(d, float("nan")))
        return h / torch.sqrt(torch.outer(d, d))
