"""Why dense attention is hard to learn (CB's argument): the softmax Jacobian.

For a = softmax(z) the Jacobian is J = diag(a) - a a^T, and

    ||J||_F^2 = sum_i a_i^2 - 2 sum_i a_i^3 + (sum_i a_i^2)^2

It is 0 for one-hot a, and for uniform a over N tokens it equals (N-1)/N^2, which
shrinks like 1/N: little gradient reaches the logits of a dense (high-entropy) attention
row of many tokens, so dense maps are slow to learn, the argument CB makes for handing
the uniform part to every block for free.
"""
from __future__ import annotations

import torch
from torch import Tensor


def softmax_jacobian_sq_norm(attn: Tensor) -> Tensor:
    """``||diag(a) - a a^T||_F^2`` of every row ``a`` of ``attn`` (last dim sums to 1): shape ``attn.shape[:-1]``."""
    a = attn.to(torch.float64)
    s2 = a.pow(2).sum(-1)
    return s2 - 2 * a.pow(3).sum(-1) + s2.pow(2)


def uniform_jacobian_sq_norm(n: int) -> float:
    """``||J||_F^2`` for the uniform distribution over ``n`` tokens: (n - 1) / n^2."""
    return (n - 1) / n**2
