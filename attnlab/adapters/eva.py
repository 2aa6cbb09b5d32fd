"""timm's ``Eva`` family: EVA, EVA02 and the ``vit_*_rope_*`` ViTs (rotary position embedding
applied to q and k before the attention, which the fused path then receives)."""
from .base import Adapter


def _classes():
    from timm.models.eva import EvaAttention

    return (EvaAttention,)


ADAPTER = Adapter(family="timm Eva (EVA, EVA02, RoPE ViTs)", classes=_classes, way="sdpa")
