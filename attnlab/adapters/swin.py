"""timm's ``SwinTransformer`` (v1): attention within windows of ``w x w`` tokens, ``[B * windows,
heads, w*w, w*w]``, relative position bias inside and, in shifted blocks, the mask of tokens
from different image regions (``-inf``) added to the logits."""
from .base import Adapter


def _classes():
    from timm.models.swin_transformer import WindowAttention

    return (WindowAttention,)


ADAPTER = Adapter(family="timm SwinTransformer (windows)", classes=_classes, way="sdpa", geometry="window")
