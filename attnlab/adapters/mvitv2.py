"""timm's ``MultiScaleVit`` (MViTv2): pooled attention (queries and keys on grids pooled with
their own strides), decomposed relative position terms added to the logits, computed by hand:
the softmax call is observed."""
from .base import Adapter


def _classes():
    from timm.models.mvitv2 import MultiScaleAttention, MultiScaleAttentionPoolFirst

    return (MultiScaleAttention, MultiScaleAttentionPoolFirst)


ADAPTER = Adapter(family="timm MultiScaleVit (MViTv2, pooled)", classes=_classes, way="softmax", geometry="pooled")
