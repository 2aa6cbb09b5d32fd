"""What the explorer shows of each model, decided before any image goes through it.

Checking every model up front (capture supports it, its token layout, the ``--layers``
it gets) lets the page's size be estimated, and a run over budget be refused, before the
first forward pass.

``--layers`` default: first, middle and last block (``0, (L-1)//2, L-1``), a handful
spread over depth. Per-head attention rows are stored for those blocks only; the
per-layer metrics beside the image cover every block.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

from ..errors import AttnlabError, one_line
from ..layout import TokenLayout
from ..studies.inputs import LoadedModel

LayerSpec = Union[None, str, int, Sequence[Union[int, str]]]
APPLIED, OWN = "applied", "own"
GRID_FAMILIES = ("the explorer shows models whose attention runs over one patch grid "
                 "(timm ViT / DeiT / registers, ReViT, CB)")


@dataclass
class ModelPlan:
    """One model as the page will show it: its layout, depth, heads, stored blocks, attention kinds."""

    model: LoadedModel
    layout: TokenLayout
    depth: int
    heads: int
    layers: List[int]          # blocks whose per-head rows are stored (0-based, sorted)
    points: Dict[str, List[str]]  # attention kind ("applied"; ReViT also "own") -> its hook points, block order
    prefix_names: List[str]    # "cls", "dist", "reg1", ...: the prefix tokens in token order

    @property
    def label(self) -> str:
        return self.model.label

    @property
    def sources(self) -> List[str]:
        """The attention kinds shown: ``applied``, and ``own`` (softmax(S_l)) for ReViT."""
        return list(self.points)

    @property
    def size(self) -> Tuple[int, int]:
        return tuple(self.model.spec.input.size)  # type: ignore[return-value]


def default_layers(depth: int) -> List[int]:
    """First, middle and last block: ``sorted({0, (L-1)//2, L-1})``."""
    return sorted({0, (depth - 1) // 2, depth - 1})


def parse_layers(layers: LayerSpec, depth: int, who: str) -> List[int]:
    """Block indices from ``--layers`` (ints, comma lists, ``all``; negative counts from the end)."""
    if layers is None or (isinstance(layers, (list, tuple)) and not layers):
        return default_layers(depth)
    items = [layers] if isinstance(layers, (str, int)) else list(layers)
    out: List[int] = []
    for item in items:
        for text in str(item).split(","):
            text = text.strip()
            if not text:
                continue
            if text == "all":
                out.extend(range(depth))
                continue
            try:
                index = int(text)
            except ValueError:
                raise AttnlabError(f"--layers takes block indices such as 0,5,11 (or all), not {text!r}") from None
            if not -depth <= index < depth:
                raise AttnlabError(f"--layers {index} is out of range for {who} ({depth} blocks: 0..{depth - 1}, "
                                   "or -1 for the last)")
            out.append(index % depth)
    if not out:
        raise AttnlabError("--layers is empty; pass block indices such as 0,5,11 (or all)")
    return sorted(set(out))


def prefix_token_names(net, count: int) -> List[str]:
    """Names of the prefix tokens in timm's order: class, distillation, then registers."""
    names = []
    if getattr(net, "cls_token", None) is not None:
        names.append("cls")
    if getattr(net, "dist_token", None) is not None:
        names.append("dist")
    names += [f"reg{i + 1}" for i in range(count - len(names))]
    return names[:count] if len(names) >= count else names + [f"prefix{i}" for i in range(len(names), count)]


def _heads(attn) -> int:
    heads = getattr(attn, "num_heads", None) or getattr(attn, "num_attention_heads", None)
    if not isinstance(heads, int) or heads < 1:
        raise AttnlabError(f"cannot tell how many heads {type(attn).__name__} has")
    return heads


def plan_model(m: LoadedModel, layers: LayerSpec) -> ModelPlan:
    """Check that capture supports ``m`` on one patch grid and decide what of it the page stores."""
    from ..adapters import find_attention
    from ..capture import attention_layers, hook_point_names

    try:
        blocks = attention_layers(m.model)
        names = hook_point_names(m.model)
        layout = TokenLayout.from_model(m.model, tuple(m.spec.input.size))
        heads = [_heads(attn) for _, _, attn in blocks]
    except AttnlabError as e:
        raise AttnlabError(f"{m.label}: {e}") from e
    except (ValueError, AttributeError, TypeError) as e:
        what = type(m.model).__name__
        raise AttnlabError(f"{m.label}: cannot explore {what} ({one_line(e)}); {GRID_FAMILIES}") from e
    other = sorted({(f.adapter.family, f.adapter.geometry) for f in find_attention(m.model)
                    if f.adapter.geometry != "grid"})
    if other:
        family, geometry = other[0]
        raise AttnlabError(f"{m.label}: {family} attention is {geometry}-shaped, which the explorer cannot place on "
                           f"one patch grid yet; {GRID_FAMILIES}")
    if len(set(heads)) > 1:
        raise AttnlabError(f"{m.label}: the explorer needs the same number of heads in every block, not {heads}")
    points = {APPLIED: [n for n in names if n.endswith(".pattern")]}
    own = [n for n in names if n.endswith(".own_pattern")]
    if len(own) == len(points[APPLIED]):
        points[OWN] = own
    depth = len(points[APPLIED])
    return ModelPlan(model=m, layout=layout, depth=depth, heads=heads[0], layers=parse_layers(layers, depth, m.label),
                     points=points, prefix_names=prefix_token_names(m.model, layout.num_prefix_tokens))


def check_layer_option(layers: LayerSpec) -> None:
    """Reject a malformed ``--layers`` before any model loads (ranges are checked per model later)."""
    parse_layers(layers, depth=10 ** 4, who="any model")


def resolve_max_bytes(max_bytes: Optional[float]) -> int:
    """The page's size budget in bytes (a positive number)."""
    if max_bytes is None or isinstance(max_bytes, bool) or not max_bytes > 0:
        shown = f"{max_bytes / 1e6:g}" if isinstance(max_bytes, (int, float)) else repr(max_bytes)
        raise AttnlabError(f"--max-mb (max_bytes) must be more than 0, not {shown}; the default is 25 MB")
    return int(max_bytes)
