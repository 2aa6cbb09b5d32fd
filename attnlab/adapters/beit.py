"""timm's ``Beit``: relative position bias added to the logits (passed to the fused path as its mask)."""
from .base import Adapter


def _classes():
    from timm.models.beit import Attention

    return (Attention,)


ADAPTER = Adapter(family="timm Beit (relative position bias)", classes=_classes, way="sdpa")
