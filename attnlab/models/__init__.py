"""attnlab's model families (ViT, ReViT, ViT+CB, ReViT+CB), registered with timm on import."""
from .broadcast import BroadcastBlock, ContextBroadcast
from .residual import ResidualAttention, ResidualBlock, ResidualVisionTransformer
from .zoo import ENTRIES, FAMILIES, SIZES, RESOLUTIONS, ModelEntry, checkpoint_filter_fn, family_of, list_models
from .factory import create_model, resolve_model_name

__all__ = [
    "BroadcastBlock", "ContextBroadcast", "ResidualAttention", "ResidualBlock",
    "ResidualVisionTransformer", "ENTRIES", "FAMILIES", "SIZES", "RESOLUTIONS", "ModelEntry",
    "checkpoint_filter_fn", "family_of", "list_models", "create_model", "resolve_model_name",
]
