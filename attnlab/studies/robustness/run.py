"""Run a model on every condition of each batch: all transformed copies in one forward pass.

    run = RobustnessRun(model, spec, conditions)
    for images, labels in batches:          # pixel space, [0, 1]
        run.update(images, labels)          # several runs can share each decoded batch
    outcomes = run.outcomes()               # condition -> per-image Outcome

The reference view and every condition's view of a batch are normalised together and
go through the model in chunks of at most ``max_batch`` images, so a sweep costs one
batched forward per chunk rather than one call per condition.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ...errors import AttnlabError
from ...spec import InputSpec
from .conditions import PROTOCOLS, Condition, views
from .statistics import Outcome, outcome

if TYPE_CHECKING:
    from ...metrics import AttentionStats

Progress = Optional[Callable[[int], None]]


class RobustnessRun:
    """One model under a fixed set of conditions, fed batch by batch.

    ``seed`` seeds the random protocols: two runs with the same seed fed the same batches
    see the same random views. ``attention_stats`` (condition -> ``AttentionStats``) also
    measures the attention of each condition's images. ``use_labels=False`` measures the
    label-free metrics only (see :func:`~.statistics.outcome`). ``progress(done)`` hears
    the number of images seen after each batch.
    """

    def __init__(
        self,
        model: nn.Module,
        spec: InputSpec,
        conditions: Sequence[Condition],
        *,
        protocol: str = "sweep",
        seed: int = 0,
        max_batch: int = 1024,
        device: torch.device = torch.device("cpu"),
        attention_stats: Optional[Dict[Condition, "AttentionStats"]] = None,
        use_labels: bool = True,
        progress: Progress = None,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise AttnlabError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
        self.model = model.to(device).eval()
        self.spec = spec
        self.conditions = list(conditions)
        self.protocol = protocol
        self.max_batch = max_batch
        self.device = device
        self.attention_stats = attention_stats
        self.use_labels = use_labels
        self.progress = progress
        self.n_images = 0
        self._generator = torch.Generator().manual_seed(seed)
        self._parts: Dict[Condition, List[Outcome]] = {c: [] for c in self.conditions}
        self._layout = None

    def update(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Measure one batch of pixel-space images ``[B, C, H, W]`` and their labels (-1: none)."""
        from ...data import normalize

        B = images.shape[0]
        probs = self._probabilities(normalize(torch.cat(views(images, self.conditions, self.protocol,
                                                              self._generator)), self.spec), B, images)
        reference, *per_condition = probs.split(B)
        for cond, p in zip(self.conditions, per_condition):
            self._parts[cond].append(outcome(p, reference, labels, self.use_labels))
        self.n_images += B
        if self.progress is not None:
            self.progress(self.n_images)

    def outcomes(self) -> Dict[Condition, Outcome]:
        """Per-image outcomes of every condition over all batches so far."""
        empty = Outcome(*(np.zeros(0) for _ in range(4)))
        return {c: Outcome.concatenate(parts) if parts else empty for c, parts in self._parts.items()}

    def _probabilities(self, stacked: torch.Tensor, B: int, images: torch.Tensor) -> torch.Tensor:
        """Softmax outputs of ``stacked`` in chunks; attention of each condition's rows to its stats."""
        from ...capture import hooks
        from ...layout import TokenLayout

        if self.attention_stats and self._layout is None:
            self._layout = TokenLayout.from_model(self.model, tuple(images.shape[-2:]))
        out = []
        with torch.inference_mode():
            for start in range(0, stacked.shape[0], self.max_batch):
                x = stacked[start:start + self.max_batch].to(self.device, non_blocking=True)
                if self.attention_stats:
                    # which condition each row belongs to (rows 0..B-1 are the reference view: -1)
                    rows = torch.arange(start, start + x.shape[0]) // B - 1
                    with hooks(self.model, "*.attn.pattern", self._attention_sink(rows)):
                        logits = self.model(x)
                else:
                    logits = self.model(x)
                out.append(logits.float().softmax(-1).cpu())
        return torch.cat(out)

    def _attention_sink(self, rows: torch.Tensor) -> Callable[[str, torch.Tensor], None]:
        present = [(cond, rows == k) for k, cond in enumerate(self.conditions) if (rows == k).any()]

        def sink(name: str, t: torch.Tensor) -> None:  # name: blocks.{layer}.attn.pattern
            layer = int(name.split(".")[1])
            for cond, sel in present:
                self.attention_stats[cond].update(layer, t[sel.to(t.device)], self._layout)

        return sink


def evaluate_conditions(
    model: nn.Module,
    spec: InputSpec,
    batches: Iterable[Tuple[torch.Tensor, torch.Tensor]],
    conditions: Sequence[Condition],
    **options: Any,
) -> Dict[Condition, Outcome]:
    """Run every condition on every batch of pixel-space images; per-image outcomes per condition.

    ``options`` are :class:`RobustnessRun`'s (protocol, seed, max_batch, device, attention_stats,
    use_labels, progress).
    """
    run = RobustnessRun(model, spec, conditions, **options)
    for images, labels in batches:
        run.update(images, labels)
    return run.outcomes()
