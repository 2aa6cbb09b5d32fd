"""attnlab: what attention in Vision Transformers does (ViT, ReViT, CB).

    import attnlab
    net, spec = attnlab.load_model("vit.pt")
    out, cache = attnlab.run_with_cache(net, x, "*.attn.pattern")
    result = attnlab.measure_attention([(net, spec)], dataset="fashion-mnist")
    result.frame, result.figures(), result.save("out/attention")

``import attnlab`` registers the ViT / ReViT / CB families with timm (as soon as timm is
imported) and exposes the Python API below; every name loads on first use, so the
import itself is instant.
"""
import importlib as _importlib

from . import _registration

__version__ = "0.1.0"

_registration.install()

# public name -> module it lives in (None: the name is a subpackage)
_API = {
    # models and checkpoints
    "load_model": "attnlab.checkpoint",
    "save_checkpoint": "attnlab.checkpoint",
    "read_checkpoint": "attnlab.checkpoint",
    "Checkpoint": "attnlab.checkpoint",
    "ModelSpec": "attnlab.spec",
    "InputSpec": "attnlab.spec",
    "create_model": "attnlab.models",
    "list_models": "attnlab.models",
    # capture
    "capture_attention": "attnlab.capture",
    "run_with_cache": "attnlab.capture",
    "TokenLayout": "attnlab.layout",
    # data
    "load_dataset": "attnlab.data",
    # the studies
    "measure_attention": "attnlab.studies.attention",
    "measure_robustness": "attnlab.studies.robustness",
    "explain": "attnlab.studies.attribution",
    "measure_similarity": "attnlab.studies.similarity",
    "ImageSelection": "attnlab.studies.inputs",
    "StudyResult": "attnlab.studies.result",
    # training and evaluation
    "TrainConfig": "attnlab.train.config",
    "train": None,
    "evaluate": "attnlab.train.evaluate",
    # metrics on tensors
    "metrics": None,
    # errors
    "AttnlabError": "attnlab.errors",
    "CheckpointError": "attnlab.errors",
    "ModelNameError": "attnlab.errors",
}
_ALIASES = {"evaluate": "evaluate_checkpoint"}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str):  # noqa: ANN202
    if name not in _API:
        raise AttributeError(f"module 'attnlab' has no attribute {name!r}")
    module = _API[name]
    if module is None:
        value = _importlib.import_module(f"attnlab.{name}")
    else:
        value = getattr(_importlib.import_module(module), _ALIASES.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list:
    return list(__all__)
