"""``explain`` from a notebook: in-memory models, figures without files, ``save``, images decoded once."""
import matplotlib
import matplotlib.pyplot
import numpy as np
import pytest
import torch
from PIL import Image

from attnlab.checkpoint import default_classes
from attnlab.data import FileDataset
from attnlab.errors import AttnlabError
from attnlab.models import create_model
from attnlab.spec import InputSpec, ModelSpec
from attnlab.studies.attribution import AttributionResult, explain
from attnlab.tables import COLUMNS

SPEC = InputSpec(size=(32, 32), channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
FILES = ["a.png", "b.png", "c.png"]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for name in FILES:
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / name)
    return d


def _net():
    torch.manual_seed(0)
    return create_model("vit_micro_patch4_32").eval()


def _pair():
    net = _net()
    spec = ModelSpec(arch="vit_micro_patch4_32", options={}, input=SPEC, classes=default_classes(net),
                     source="module:vit_micro_patch4_32", kind="module")
    return net, spec


def test_a_module_and_a_pair_from_a_notebook(tmp_path, images):
    result = explain([_net(), _pair()], ["bare", "pair"], images=[images], methods="gradcam", batch_size=2,
                     device="cpu", faithfulness="road")
    assert isinstance(result, AttributionResult)
    assert tuple(result.frame.columns) == COLUMNS
    assert [m.label for m in result.models] == ["bare", "pair"] and result.methods == ["gradcam"]
    assert [p.split("/")[-1] for p in result.names] == FILES
    assert result.image_titles() == FILES
    style = dict(matplotlib.rcParams)
    figures = result.figures()
    assert list(figures) == ["gradcam"] and isinstance(figures["gradcam"], matplotlib.figure.Figure)
    matplotlib.pyplot.close(figures["gradcam"])
    assert dict(matplotlib.rcParams) == style        # @styled: matplotlib's global style untouched

    out = tmp_path / "out"
    out.mkdir()
    (out / "gradcam.pdf").write_text("an earlier run's")       # replaced
    written = result.save(out)
    names = ["gradcam.csv", "gradcam.pdf", "gradcam.png", "gradcam_maps.npz"]
    assert written == [out / n for n in names]
    assert sorted(p.name for p in out.iterdir()) == names
    npz = np.load(out / "gradcam_maps.npz")
    assert [str(n).split("/")[-1] for n in npz["names"]] == FILES
    assert list(npz["names"]) == result.names
    assert npz["bare/gradcam"].shape == (3, 32, 32) and list(npz["models"]) == ["bare", "pair"]
    assert npz["labels"].tolist() == [-1, -1, -1]


def test_models_with_one_input_spec_decode_the_images_once(images, monkeypatch):
    calls = []
    original = FileDataset.load_image

    def counting(self, index):
        calls.append(index)
        return original(self, index)

    monkeypatch.setattr(FileDataset, "load_image", counting)
    net, spec = _pair()
    other, _ = _pair()
    result = explain([(net, spec), (other, spec)], images=[images], num_images=2, metrics=False, device="cpu")
    assert sorted(calls) == [0, 1]                      # two images, read once for both models
    assert [m.label for m in result.models] == ["vit_micro_patch4_32", "vit_micro_patch4_32-2"]
    assert result.models[0].inputs is result.models[1].inputs
    assert set(result.frame.metric) == {"probability"}


def test_bad_options_fail_before_any_model_loads(images):
    class Exploding:  # any use of it as a model source would fail differently
        pass

    for kwargs, fragment in [
        (dict(images=[images], methods="nope"), "unknown method 'nope'"),
        (dict(images=[images], num_images=0), "--num-images must be at least 1"),
        (dict(images=[images], batch_size=0), "--batch-size must be at least 1"),
        (dict(images=[images], target="true"), "--target true needs labelled images"),
        (dict(images=[images], device="tpu"), "--device must be"),
        (dict(), "pass either --images"),
    ]:
        with pytest.raises(AttnlabError, match=fragment.replace("(", r"\(")):
            explain([Exploding()], **kwargs)
