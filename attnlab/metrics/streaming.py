"""Streaming accumulation of attention and feature metrics over many batches.

Analysing a model on a dataset means thousands of images and a dozen layers; keeping
every attention map (or even every per-image value) is not needed. :class:`AttentionStats`
keeps, for each (layer, metric), only a count and float64 running moments, so its
memory is fixed once every layer has been seen, however many images follow. Means are
exact batch-merge means; spreads use Chan et al.'s pairwise update of the sum of
squared deviations (the numerically stable form of "sum and sum of squares").

High-norm tokens (Darcet et al. 2024; :mod:`.tokens`) are optional metrics, measured only
when named in ``metrics=`` (:data:`HIGH_NORM_METRICS`, never by default):

    token_norm_q25 ... token_norm_max   per block output: quantiles of each image's patch-token
                                        norms ||x_g||_2 (q = 0.25, 0.5, 0.75, 0.99, 1), mean over images
    high_norm_share                     per block output: share of patch tokens with
                                        ||x_g|| > Q3 + 3 IQR of that image's patch-token norms
    high_norm_mass                      per head: mass the attention of layer l puts on the
                                        high-norm patch tokens of its input (block l-1's output;
                                        for block 0 the embedded tokens), mean over patch queries
                                        of the attention summed over those keys (as prefix_mass)

So at layer l, ``token_norm_*`` and ``high_norm_share`` describe block l's output, and
``high_norm_mass`` the attention of layer l on the outliers of block l-1's output (the
``high_norm_share`` row of layer l-1): feed each batch in forward order, block l-1's
tokens (``update_tokens``) before layer l's map (``update``), and block 0's input with
``update_block_input(0, ...)``.
"""
from __future__ import annotations

import math
import operator
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..layout import TokenLayout
from ..tables import columns_except
from .features import effective_rank, token_cosine_similarity
from .kernels import (
    ScratchBuffer,
    distance_rings,
    globality_from_rings,
    nonlocality_core,
    pair_sums,
    prefix_mass_core,
    renorm_rows,
    row_entropy,
)
from .tokens import FENCE_K, NORM_QUANTILES, high_norm_mass, high_norm_tokens, token_norms
from .validation import MetricInputError, describe_layout, radii_tensor, require_layout, validate_attention

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["AttentionStats", "DEFAULT_RADII", "HIGH_NORM_METRICS", "METRIC_NAMES", "NORM_METRICS", "ROW_COLUMNS"]

#: Every metric name :meth:`AttentionStats.rows` can emit, in the order it emits them.
METRIC_NAMES: Tuple[str, ...] = (
    "entropy",         # mean over all queries of -sum_j A_ij log A_ij (nats)
    "entropy_norm",    # entropy / log N
    "entropy_patch",   # entropy, patch queries only
    "entropy_prefix",  # entropy, prefix queries only (only when the layout has prefix tokens)
    "mad_px",          # mean attention distance, pixels, patch block renormalised
    "mad_px_raw",      # same, prefix columns dropped without renormalising (probing-vits)
    "nonlocality",     # ConViT non-locality, patch units
    "prefix_mass",     # mean over patch queries of the mass on prefix tokens
    "globality",       # share of renormalised patch attention beyond `radius` patches
    "token_cosine",    # mean pairwise cosine similarity of patch tokens (per layer, head -1)
    "effective_rank",  # effective rank of the patch-token matrix (per layer, head -1)
)

#: Quantiles of the patch-token norms of a block output (per layer, head -1), one per NORM_QUANTILES.
NORM_METRICS: Tuple[str, ...] = tuple("token_norm_max" if q == 1.0 else f"token_norm_q{round(q * 100):02d}"
                                      for q in NORM_QUANTILES)
#: Optional metrics (module docstring): only when asked for by name, never by default.
HIGH_NORM_METRICS: Tuple[str, ...] = NORM_METRICS + (
    "high_norm_share",  # share of a block output's patch tokens beyond the far-out fence (per layer, head -1)
    "high_norm_mass",   # mass layer l's attention puts on the high-norm tokens of its input (per head)
)

#: Columns of every row, in the order of :data:`attnlab.tables.COLUMNS`: all but the
#: architecture and input transform (the caller knows them) and the confidence interval
#: (``tables.tidy`` derives it from ``std`` and ``n_images``).
ROW_COLUMNS: Tuple[str, ...] = columns_except("arch", "transform", "magnitude", "magnitude_y", "ci_low", "ci_high",
                                             "stage", "n_seeds", "seeds")

#: Radii (patch units) of the globality curve unless told otherwise; r = 0 is 1 - self-attention.
DEFAULT_RADII: Tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0)

_ORDER = {name: k for k, name in enumerate(METRIC_NAMES + HIGH_NORM_METRICS)}


class _Moments:
    """Count, mean and sum of squared deviations of per-image values of a fixed shape, kept on the
    device of the values (a GPU run adds each batch without a copy to the host)."""

    __slots__ = ("n", "mean", "m2")

    def __init__(self, shape: torch.Size, device: Optional[torch.device] = None) -> None:
        self.n = 0
        self.mean = torch.zeros(shape, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(shape, dtype=torch.float64, device=device)

    def add(self, x: Tensor) -> None:
        """Merge a batch ``x`` of shape ``[B, *shape]`` (Chan, Golub & LeVeque pairwise update)."""
        nb = x.shape[0]
        mean_b = x.mean(0)
        m2_b = (x - mean_b).pow(2).sum(0)
        n = self.n + nb
        delta = mean_b - self.mean
        self.mean += delta * (nb / n)
        self.m2 += m2_b + delta.pow(2) * (self.n * nb / n)
        self.n = n

    def std(self) -> Tensor:
        """Sample standard deviation over images (``torch.std``'s correction=1; NaN for one image)."""
        if self.n < 2:
            return torch.full_like(self.mean, math.nan)
        return (self.m2 / (self.n - 1)).clamp_min(0).sqrt()


class AttentionStats:
    """Per-layer, per-head attention and feature metrics accumulated over batches.

    ``update(layer, attn, layout)`` adds the per-image values of every attention metric
    of :data:`METRIC_NAMES` (``entropy_prefix`` only when there are prefix tokens);
    ``update_tokens(layer, tokens, layout)`` adds ``token_cosine`` and ``effective_rank``
    of a block output. ``rows(...)`` / ``to_frame(...)`` give one tidy row per (layer,
    head, metric[, radius]) with the mean and sample std over images. A layer must keep
    one layout and head count: use one accumulator per input size.
    """

    def __init__(
        self,
        radii: Union[Sequence[float], Tensor] = DEFAULT_RADII,
        check: bool = True,
        metrics: Optional[Iterable[str]] = None,
    ) -> None:
        """``radii``: globality-curve radii in patch units; ``check``: refuse maps whose rows
        do not sum to 1; ``metrics``: compute only these names of :data:`METRIC_NAMES` and
        :data:`HIGH_NORM_METRICS` (default: all of :data:`METRIC_NAMES`)."""
        self.radii: Tensor = radii_tensor(radii)
        self._radii = tuple(self.radii.tolist())
        self.check = bool(check)
        chosen = set(METRIC_NAMES if metrics is None else metrics)
        known = METRIC_NAMES + HIGH_NORM_METRICS
        unknown = sorted(chosen - set(known))
        if unknown:
            raise MetricInputError(f"unknown metrics {unknown}; choose from {', '.join(known)}")
        self.metrics = frozenset(chosen)
        self._moments: Dict[Tuple[int, str], _Moments] = {}
        self._layer_moments: Dict[Tuple[int, str], _Moments] = {}  # per-image means over heads
        self._layouts: Dict[int, TokenLayout] = {}
        self._heads: Dict[int, int] = {}
        self._scratch = ScratchBuffer()  # per-element temporaries reused by every update
        self._input_outliers: Dict[int, Tensor] = {}  # layer -> high-norm tokens of its input, this batch

    # ------------------------------------------------------------------ updates

    def _layer_key(self, layer: Any, layout: Any, what: str) -> Tuple[int, TokenLayout]:
        if isinstance(layer, bool):
            raise MetricInputError(f"layer must be an int, got {layer!r}")
        try:
            layer = operator.index(layer)
        except TypeError:
            raise MetricInputError(f"layer must be an int, got {type(layer).__name__}") from None
        layout = require_layout(layout, what)
        seen = self._layouts.get(layer)
        if seen is not None and seen != layout:
            raise MetricInputError(
                f"layer {layer} was updated with {describe_layout(seen)}, now {describe_layout(layout)}; "
                "use one AttentionStats per input size"
            )
        return layer, layout

    def _commit(self, layer: int, layout: TokenLayout, values: Dict[str, Tensor]) -> None:
        self._layouts[layer] = layout
        for name, v in values.items():
            v = v.detach().to(dtype=torch.float64)  # stays on its device: no host sync per batch
            key = (layer, name)
            if key not in self._moments:
                self._moments[key] = _Moments(v.shape[1:], v.device)
            self._moments[key].add(v)
            if v.dim() >= 2:  # per head: also the whole layer, the mean over heads of each image
                if key not in self._layer_moments:
                    self._layer_moments[key] = _Moments(v.shape[2:], v.device)
                self._layer_moments[key].add(v.mean(dim=1))

    def update(self, layer: int, attn: Tensor, layout: TokenLayout) -> None:
        """Add one batch of attention maps ``[B, heads, N, N]`` of block ``layer``."""
        layer, layout = self._layer_key(layer, layout, "AttentionStats.update")
        # Per-element work runs in the map's precision (at least float32): per-image values
        # sum at most N terms; the running sums over images are float64 (_Moments).
        dtype = torch.float64 if attn.dtype == torch.float64 else torch.float32
        a = validate_attention(attn, layout, self.check, dtype=dtype)
        heads = a.shape[1]
        if self._heads.get(layer, heads) != heads:
            raise MetricInputError(f"layer {layer} was updated with {self._heads[layer]} heads, now {heads}")
        p = layout.num_prefix_tokens
        want = self.metrics
        values: Dict[str, Tensor] = {}
        # one pass over the map for each expensive part, shared by the metrics that need it
        if want & {"entropy", "entropy_norm", "entropy_patch", "entropy_prefix"}:
            entropy_rows = row_entropy(a, out=self._scratch.like(a))         # H_i: [B, H, N]
            entropy = entropy_rows.mean(-1)
            if "entropy" in want:
                values["entropy"] = entropy
            if "entropy_norm" in want and a.shape[-1] >= 2:
                values["entropy_norm"] = entropy / math.log(a.shape[-1])
            if "entropy_patch" in want:
                values["entropy_patch"] = entropy_rows[..., p:].mean(-1)
            if "entropy_prefix" in want and p > 0:
                values["entropy_prefix"] = entropy_rows[..., :p].mean(-1)
        if want & {"mad_px", "mad_px_raw", "globality"}:
            # one product for every distance metric: per query sum_j A_ij d_ij and the mass per ring
            block = a[..., p:, p:]
            sums = pair_sums(block, layout, self._radii)                     # [B, H, G, 1 + U + 1]
            weighted_px, by_ring = sums[..., 0], sums[..., 1:]
            if "mad_px" in want:
                values["mad_px"] = renorm_rows(weighted_px, by_ring.sum(-1)).mean(-1)
            if "mad_px_raw" in want:
                values["mad_px_raw"] = weighted_px.mean(-1)
            if "globality" in want:
                values["globality"] = globality_from_rings(by_ring, distance_rings(layout, self._radii)[1])
        if "nonlocality" in want:
            ph, pw = layout.patch_size
            if ph == pw and "mad_px_raw" in values:  # square patches: patch units = pixels / p
                values["nonlocality"] = values["mad_px_raw"] / ph
            else:
                values["nonlocality"] = nonlocality_core(a, layout)
        if "prefix_mass" in want:
            values["prefix_mass"] = prefix_mass_core(a, layout)
        if "high_norm_mass" in want:
            outliers = self._input_outliers.pop(layer, None)
            if outliers is None or outliers.shape[0] != a.shape[0]:
                raise MetricInputError(
                    f"high_norm_mass of layer {layer} needs the tokens of its input from the same batch first: "
                    f"update_tokens({layer - 1}, ...) (update_block_input({layer}, ...) for the first block)")
            values["high_norm_mass"] = high_norm_mass(a, outliers, layout, check=False, dtype=dtype)
        self._heads[layer] = heads
        self._commit(layer, layout, values)

    def update_tokens(self, layer: int, tokens: Tensor, layout: TokenLayout) -> None:
        """Add one batch of block-``layer`` output tokens ``[B, N, C]``: feature diversity, the norm
        quantiles and ``high_norm_share``, and the outliers ``high_norm_mass`` of layer ``layer + 1`` reads."""
        layer, layout = self._layer_key(layer, layout, "AttentionStats.update_tokens")
        values = {}
        if "effective_rank" in self.metrics:
            values["effective_rank"] = effective_rank(tokens, layout)
        if "token_cosine" in self.metrics and layout.num_patches >= 2:
            values["token_cosine"] = token_cosine_similarity(tokens, layout)
        if self.metrics & set(HIGH_NORM_METRICS):
            norms = token_norms(tokens, layout)  # [B, G]
            if self.metrics & set(NORM_METRICS):
                q = torch.quantile(norms, torch.tensor(NORM_QUANTILES, dtype=norms.dtype, device=norms.device), dim=-1)
                values.update({name: q[k] for k, name in enumerate(NORM_METRICS) if name in self.metrics})
            if "high_norm_share" in self.metrics:
                outliers = high_norm_tokens(tokens, layout, FENCE_K, norms=norms)
                values["high_norm_share"] = outliers.to(torch.float64).mean(-1)  # (1/G) #{g : ||x_g|| > fence}
            self._remember_outliers(layer + 1, tokens, layout, norms)  # block `layer`'s output feeds layer + 1
        self._commit(layer, layout, values)

    def update_block_input(self, layer: int, tokens: Tensor, layout: TokenLayout) -> None:
        """Block ``layer``'s input tokens ``[B, N, C]`` where no block output precedes them (the first
        block: the embedded tokens); ``high_norm_mass`` of layer ``layer`` measures their outliers."""
        layer, layout = self._layer_key(layer, layout, "AttentionStats.update_block_input")
        self._remember_outliers(layer, tokens, layout)

    def _remember_outliers(self, layer: int, tokens: Tensor, layout: TokenLayout,
                           norms: Optional[Tensor] = None) -> None:
        """Keep the high-norm tokens that layer ``layer``'s attention reads, until its map of this batch arrives."""
        if "high_norm_mass" in self.metrics:
            self._input_outliers[layer] = high_norm_tokens(tokens, layout, FENCE_K, norms=norms)

    # ------------------------------------------------------------------ results

    @property
    def layers(self) -> List[int]:
        """Layers seen so far, sorted."""
        return sorted(self._layouts)

    def state_numel(self) -> int:
        """Number of numbers held: fixed once every (layer, metric) has been seen."""
        moments = list(self._moments.values()) + list(self._layer_moments.values())
        return sum(m.mean.numel() + m.m2.numel() + 1 for m in moments)

    def rows(self, model: str, checkpoint: str, attention: str = "applied") -> List[Dict[str, Any]]:
        """Tidy rows, one per (layer, head, metric[, radius]), columns :data:`ROW_COLUMNS`.

        ``value`` is the mean over images, ``std`` the sample std over images (NaN for
        one image), ``head`` is -1 for the layer as a whole: per-layer metrics (feature
        diversity) and, for per-head metrics, the per-image mean over heads (so its ``std``
        is the spread over images of the layer's value, not over heads), ``radius``
        (patch units) is set for ``globality`` and NaN otherwise. ``attention`` labels
        which map was measured, e.g. ``"applied"`` (softmax(R_l) for ReViT) or ``"own"``.
        """
        out: List[Dict[str, Any]] = []
        radii = self.radii.tolist()
        for (layer, name) in sorted(self._moments, key=lambda k: (k[0], _ORDER[k[1]])):
            m = self._moments[(layer, name)]
            mean, std = m.mean.cpu(), m.std().cpu()  # one copy to the host per accumulator
            base = {"model": model, "checkpoint": checkpoint, "attention": attention, "layer": layer}
            if mean.dim() == 0:  # per-layer value
                cells = [(-1, math.nan, mean, std)]
            elif mean.dim() == 1:  # per head
                cells = [(h, math.nan, mean[h], std[h]) for h in range(mean.shape[0])]
            else:  # per head and radius
                cells = [
                    (h, radii[k], mean[h, k], std[h, k]) for h in range(mean.shape[0]) for k in range(mean.shape[1])
                ]
            whole = self._layer_moments.get((layer, name))
            if whole is not None:  # head -1: the layer as a whole (per-image mean over heads)
                wmean, wstd = whole.mean.cpu(), whole.std().cpu()
                if wmean.dim() == 0:
                    cells.append((-1, math.nan, wmean, wstd))
                else:
                    cells += [(-1, radii[k], wmean[k], wstd[k]) for k in range(wmean.shape[0])]
            for head, radius, value, spread in cells:
                out.append({
                    **base, "head": head, "metric": name, "radius": float(radius),
                    "value": float(value), "std": float(spread), "n_images": m.n,
                })
        return out

    # ------------------------------------------------------------------ several processes

    #: How partial accumulators combine (``attnlab.studies.sharding``): count, mean, sum of squared deviations.
    PARTIALS = "moments"

    def partials(self) -> Dict[Tuple[str, int, str], Tuple[int, Tensor, Tensor]]:
        """Every accumulator as ``(n, mean, m2)``, keyed ``("head" | "layer", layer, metric)`` ("layer":
        the per-image mean over heads): what combining the statistics of several processes needs."""
        out = {("head", layer, name): (m.n, m.mean, m.m2) for (layer, name), m in self._moments.items()}
        out.update({("layer", layer, name): (m.n, m.mean, m.m2) for (layer, name), m in self._layer_moments.items()})
        return out

    def set_partials(self, partials: Dict[Tuple[str, int, str], Tuple[int, Tensor, Tensor]]) -> None:
        """Replace every accumulator by ``partials`` (as :meth:`partials` gives them): the combined
        totals of several processes, for :meth:`rows` (a layer's layout is not part of them)."""
        self._moments, self._layer_moments = {}, {}
        for (kind, layer, name), (n, mean, m2) in partials.items():
            m = _Moments(mean.shape, mean.device)
            m.n, m.mean, m.m2 = int(n), mean.to(torch.float64), m2.to(torch.float64)
            (self._moments if kind == "head" else self._layer_moments)[(layer, name)] = m

    def to_frame(self, model: str, checkpoint: str, attention: str = "applied") -> "pd.DataFrame":
        """The rows of :meth:`rows` as a pandas DataFrame with columns :data:`ROW_COLUMNS`."""
        import pandas as pd

        return pd.DataFrame(self.rows(model, checkpoint, attention), columns=list(ROW_COLUMNS))
