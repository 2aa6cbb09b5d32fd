"""timm's ``VisionTransformerRelPos``: relative position bias or MLP-log position bias on the logits."""
from .base import Adapter


def _classes():
    from timm.models.vision_transformer_relpos import RelPosAttention

    return (RelPosAttention,)


ADAPTER = Adapter(family="timm VisionTransformerRelPos", classes=_classes, way="sdpa")
