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
from .conditions import PROTOCOLS, Condition, skip_views, views
from .statistics import Outcome, outcome

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from ..routing import LayerRouter, RoutedStats
    from ..sharding import World

Progress = Optional[Callable[[int], None]]


class RobustnessRun:
    """One model under a fixed set of conditions, fed batch by batch.

    ``seed`` seeds the random protocols: two runs with the same seed fed the same batches
    see the same random views. ``attention_metrics`` (e.g. ``("mad_px", "entropy")``) also
    measures the attention of each condition's images, every layer of every family (grid layers
    on the model's token layout, windowed / pooled / class attention on each layer's geometry:
    ``attnlab.studies.routing``); :meth:`attention_frame` gives its rows. ``use_labels=False`` measures the
    label-free metrics only (see :func:`~.statistics.outcome`). ``progress(done)`` hears
    the number of images seen after each batch; ``label`` names the model in errors.
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
        attention_metrics: Sequence[str] = (),
        use_labels: bool = True,
        progress: Progress = None,
        label: str = "the model",
    ) -> None:
        if protocol not in PROTOCOLS:
            raise AttnlabError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
        self.model = model.to(device).eval()
        self.spec = spec
        self.conditions = list(conditions)
        self.protocol = protocol
        self.max_batch = max_batch
        self.device = device
        self.router: Optional["LayerRouter"] = None
        self.attention_stats: Dict[Condition, "RoutedStats"] = {}
        if attention_metrics:
            from ..routing import LayerRouter, RoutedStats

            self.router = LayerRouter(self.model)
            self.attention_stats = {c: RoutedStats(self.router, attention_metrics) for c in self.conditions}
        self.use_labels = use_labels
        self.label = label
        self.progress = progress
        self.n_images = 0
        self._generator = torch.Generator().manual_seed(seed)
        self._parts: Dict[Condition, List[Outcome]] = {c: [] for c in self.conditions}

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

    def skip(self, batches: int, batch_size: int) -> None:
        """Draw what ``batches`` batches of ``batch_size`` images would, without them: a process whose
        share starts later in the data sees the random views one process would (``sharding``)."""
        for _ in range(batches):
            skip_views(batch_size, self.conditions, self.protocol, self._generator, tuple(self.spec.size))

    def merge(self, world: "World") -> None:
        """Combine every rank's outcomes (gathered in rank order: image order) and attention
        statistics; every rank then holds those of all images. Every rank calls it."""
        if not world.sharded:
            return
        parts = world.gather({k: self._parts[c] for k, c in enumerate(self.conditions)})
        self._parts = {c: [o for theirs in parts for o in theirs[k]] for k, c in enumerate(self.conditions)}
        for stats in self.attention_stats.values():
            stats.merge(world)
        self.n_images = world.total(self.n_images)

    def outcomes(self) -> Dict[Condition, Outcome]:
        """Per-image outcomes of every condition over all batches so far."""
        empty = Outcome(*(np.zeros(0) for _ in range(4)))
        return {c: Outcome.concatenate(parts) if parts else empty for c, parts in self._parts.items()}

    def attention_frame(self, model: str, checkpoint: str) -> "pd.DataFrame":
        """Attention rows of every condition, the mean over heads (``head = -1``) per layer, with
        the condition's ``transform``, ``magnitude`` and ``magnitude_y`` and the layer's ``stage``."""
        import pandas as pd

        frames = []
        for cond, stats in self.attention_stats.items():
            att = stats.to_frame(model, checkpoint)
            att = att[att["head"] == -1].drop(columns=["radius"])
            att["transform"], att["magnitude"], att["magnitude_y"] = cond.transform, cond.magnitude, cond.magnitude_y
            frames.append(att)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def _probabilities(self, stacked: torch.Tensor, B: int, images: torch.Tensor) -> torch.Tensor:
        """Softmax outputs of ``stacked`` in chunks; attention of each condition's rows to its stats."""
        from contextlib import ExitStack

        from ...capture import hooks
        from ..stream import checked_forward

        out = []
        with torch.inference_mode():
            for start in range(0, stacked.shape[0], self.max_batch):
                x = stacked[start:start + self.max_batch].to(self.device, non_blocking=True)
                if self.router is not None:
                    # which condition each row belongs to (rows 0..B-1 are the reference view: -1)
                    rows = torch.arange(start, start + x.shape[0]) // B - 1
                    self.router.start(tuple(x.shape[-2:]))
                    with ExitStack() as stack:
                        stack.enter_context(hooks(self.model, self.router.attention_points(),
                                                  self._attention_sink(rows)))
                        self.router.watch(stack)
                        logits = checked_forward(self.model, x, self.label)
                else:
                    logits = checked_forward(self.model, x, self.label)
                out.append(logits.float().softmax(-1).cpu())
        return torch.cat(out)

    def _attention_sink(self, rows: torch.Tensor) -> Callable[[str, torch.Tensor], None]:
        present = [(cond, rows == k) for k, cond in enumerate(self.conditions) if (rows == k).any()]

        def sink(name: str, t: torch.Tensor) -> None:
            for cond, sel in present:
                self.attention_stats[cond].update(name, t, images=sel)

        return sink


def evaluate_conditions(
    model: nn.Module,
    spec: InputSpec,
    batches: Iterable[Tuple[torch.Tensor, torch.Tensor]],
    conditions: Sequence[Condition],
    **options: Any,
) -> Dict[Condition, Outcome]:
    """Run every condition on every batch of pixel-space images; per-image outcomes per condition.

    ``options`` are :class:`RobustnessRun`'s (protocol, seed, max_batch, device, attention_metrics,
    use_labels, progress).
    """
    run = RobustnessRun(model, spec, conditions, **options)
    for images, labels in batches:
        run.update(images, labels)
    return run.outcomes()
