"""``attnlab.explore``: quantisation, what is collected (against capture, metrics, rollout, GradCAM),
the size budget, and the page's self-containment and escaping (read as text; the browser tests
drive it)."""
import base64
import io
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attnlab.capture import run_with_cache
from attnlab.errors import AttnlabError
from attnlab.explore import ExploreResult, default_layers, estimate_bytes, explore
from attnlab.explore.budget import check_budget
from attnlab.explore.page import script_json
from attnlab.explore.plan import parse_layers, plan_model
from attnlab.explore.quantise import dequantise_rows, quantise_map, quantise_rows
from attnlab.metrics import attention_entropy_per_image, mean_attention_distance_per_image
from attnlab.models import create_model
from attnlab.spec import InputSpec, ModelSpec
from attnlab.studies.attribution import attention_rollout, compute_cam
from attnlab.studies.inputs import ImageSelection, LoadedModel
from attnlab.tables import COLUMNS

SPEC = InputSpec(size=(32, 32), channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
EVIL = "</title><script>window.__xss=1</script><img src=x onerror=alert(1)>"


def sharpened(name: str) -> torch.nn.Module:
    """A micro model whose attention is far from uniform (random weights give nearly uniform rows)."""
    torch.manual_seed(0)
    net = create_model(name).eval()
    with torch.no_grad():
        for blk in net.blocks:
            dim = blk.attn.qkv.in_features
            blk.attn.qkv.weight[: 2 * dim] *= 3.0   # q and k: logits x 9
    return net


def pair(net, classes=None):
    return net, ModelSpec(arch=type(net).__name__, options={}, input=SPEC,
                          classes=classes or [f"class{i}" for i in range(10)])


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / f"rgb{i}.png")
    return d


@pytest.fixture(scope="module")
def built(images):
    nets = {"vit": sharpened("vit_micro_patch4_32"), "revit": sharpened("revit_micro_patch4_32")}
    result = explore([pair(nets["vit"]), pair(nets["revit"])], ["ViT", EVIL], images=[str(images)], layers=[0, -1],
                     device="cpu")
    x, _ = ImageSelection(images=[str(images)]).stacked(SPEC)
    return nets, result, x


# ----------------------------------------------------------------------------- quantisation

def test_rows_are_within_half_a_step_and_scaled_over_patch_keys():
    a = torch.rand(2, 3, 5, 5, dtype=torch.float64)
    a[..., 0] += 20.0                                   # a class token that draws most of the mass
    a = a / a.sum(-1, keepdim=True)
    q, scale, prefix = quantise_rows(a, num_prefix=1)
    assert q.dtype == np.uint8 and q.shape == (2, 3, 5, 4) and scale.shape == (2, 3, 5)
    assert (q.max(-1) == 255).all()                     # the brightest patch is full intensity
    assert np.abs(dequantise_rows(q, scale) - a[..., 1:].numpy()).max() <= scale.max() / 2 + 1e-7
    np.testing.assert_allclose(prefix[..., 0], a[..., 0].numpy(), rtol=1e-6)


def test_all_zero_rows_and_maps_stay_zero():
    q, scale, _ = quantise_rows(torch.zeros(1, 1, 2, 3), num_prefix=0)
    assert (q == 0).all() and (scale == 0).all()
    maps = quantise_map(np.array([[[0.0, 0.0]], [[1.0, 3.0]]]))
    assert maps.tolist() == [[[0, 0]], [[85, 255]]]


# ----------------------------------------------------------------------------- what is collected

def test_stored_rows_are_the_captured_attention(built):
    nets, result, x = built
    for view, net in zip(result.views, nets.values()):
        plan = view.plan
        assert plan.layers == [0, 5]
        names = [n for kind in plan.sources for n in plan.points[kind]]
        _, cache = run_with_cache(net, x, names)
        for kind in plan.sources:
            for k, block in enumerate(plan.layers):
                a = cache[plan.points[kind][block]].double()
                a = torch.cat([a, a.mean(1, keepdim=True)], 1)                   # heads, then their mean
                rows = view.rows[kind][k]
                back = dequantise_rows(rows.q, rows.scale)
                assert np.abs(back - a[..., 1:].numpy()).max() <= rows.scale.max() / 2 + 1e-6
                np.testing.assert_allclose(rows.prefix, a[..., :1].numpy(), rtol=1e-5, atol=1e-7)
    assert result.views[1].plan.sources == ["applied", "own"] and result.views[0].plan.sources == ["applied"]


def test_metrics_are_attnlabs_metrics(built):
    nets, result, x = built
    for view, net in zip(result.views, nets.values()):
        lay = view.plan.layout
        _, cache = run_with_cache(net, x, view.plan.points["applied"])
        for block, name in enumerate(view.plan.points["applied"]):
            a = cache[name]
            mad = mean_attention_distance_per_image(a, layout=lay).numpy()       # [n, H]
            ent = attention_entropy_per_image(a).numpy()
            t = view.metrics["applied"]
            np.testing.assert_allclose(t.image_mad[block][:, :-1], mad, rtol=1e-5)
            np.testing.assert_allclose(t.image_mad[block][:, -1], mad.mean(1), rtol=1e-5)
            np.testing.assert_allclose(t.image_entropy[block][:, :-1], ent, rtol=1e-5)
            np.testing.assert_allclose(t.query_entropy[block][:, :-1].mean(-1), ent, rtol=1e-5)
            assert np.isnan(t.query_mad[block][:, :, 0]).all()                   # the class token has no position
        uniform = torch.full((1, 1, lay.num_tokens, lay.num_tokens), 1 / lay.num_tokens, dtype=torch.float64)
        for layer in view.plan.blocks:
            query_mad, query_entropy = layer.uniform()
            assert np.nanmean(query_mad) == pytest.approx(float(mean_attention_distance_per_image(uniform, layout=lay)))
            np.testing.assert_allclose(query_entropy, math.log(lay.num_tokens), rtol=1e-6)


def test_rollout_and_gradcam_are_the_attribution_maps(built):
    nets, result, x = built
    for view, net in zip(result.views, nets.values()):
        np.testing.assert_allclose(view.rollout, attention_rollout(net, x).double().numpy(), rtol=1e-5)
        cam = compute_cam(net, x, "gradcam", view.predictions.tolist())
        np.testing.assert_allclose(view.gradcam, cam, atol=1e-5)


def test_frame_is_tidy_per_image_means(built):
    _, result, _ = built
    f = result.frame
    assert tuple(f.columns) == COLUMNS and set(f["metric"]) == {"mad_px", "entropy"}
    row = f[(f.model == "ViT") & (f.metric == "mad_px") & (f.layer == 3) & (f["head"] == -1)]
    assert row["value"].iloc[0] == pytest.approx(result.views[0].metrics["applied"].image_mad[3][:, -1].mean())
    assert set(f[f.model == EVIL]["attention"]) == {"applied", "own"}


# ----------------------------------------------------------------------------- layers and budget

def test_layers_default_and_parse():
    assert default_layers(12) == [0, 5, 11] and default_layers(1) == [0] and default_layers(2) == [0, 1]
    assert parse_layers(["0,5", "-1", 5], 12, "m") == [0, 5, 11] and parse_layers("all", 3, "m") == [0, 1, 2]
    with pytest.raises(AttnlabError, match="out of range for m .12 blocks"):
        parse_layers([12], 12, "m")
    with pytest.raises(AttnlabError, match="block indices"):
        parse_layers("first", 12, "m")


def _plan(name, layers=None, **kw):
    torch.manual_seed(0)
    net = create_model(name, **kw).eval()
    spec = InputSpec(size=tuple(net.patch_embed.img_size), channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)
    return plan_model(LoadedModel(name, net, ModelSpec(name, {}, spec, []), "module:x"), layers)


def test_vit_base_at_224_for_8_images_fits_25_mb():
    plan = _plan("vit_base_patch16_224")
    assert (plan.layout.num_tokens, plan.depth, plan.heads, plan.layers) == (197, 12, 12, [0, 5, 11])
    assert estimate_bytes([plan], 8) < 25e6
    with pytest.raises(AttnlabError) as e:  # every block does not fit: the one line says how to cut
        check_budget([_plan("vit_base_patch16_224", "all")], 8, 25_000_000)
    message = str(e.value)
    assert "\n" not in message and re.search(r"about \d+\.\d MB", message)
    assert "--num-images 2 or fewer" in message and "--layers 0,5,11" in message


def test_estimate_bounds_the_page(built):
    _, result, _ = built
    estimate = estimate_bytes([v.plan for v in result.views], 2)
    assert 0.6 * estimate <= result.size_bytes <= estimate


# ----------------------------------------------------------------------------- the page as text

class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.refs += [(tag, k, v) for k, v in attrs if k in ("src", "href", "action", "data", "poster")]


def test_page_is_one_self_contained_file(built):
    _, result, _ = built
    page = result.page
    refs = _Refs()
    refs.feed(page)
    assert all(v.startswith("data:") for _, _, v in refs.refs), refs.refs
    assert "http://" not in page and "https://" not in page and "//cdn" not in page
    assert refs.tags.count("script") == 2 and refs.tags.count("link") == 1 and "iframe" not in refs.tags
    assert "default-src 'none'" in page and "@NONCE@" not in page and "@DATA@" not in page


def test_untrusted_strings_cannot_escape_the_data(built):
    _, result, _ = built
    page = result.page
    assert EVIL not in page and "<img src=x" not in page and "<script>window" not in page
    assert "<title>attnlab explore: ViT vs &lt;/title&gt;&lt;script&gt;window.__xss=1" in page   # escaped text
    assert page.count("</script>") == 2 and page.count("</title>") == 1
    data = json.loads(re.search(r'id="attnlab-data">(.*?)</script>', page, re.S).group(1))
    assert data["models"][1]["label"] == EVIL                   # the data itself is intact
    assert script_json({"s": "</script><!--<script>&"}).count("<") == 0


def test_save_writes_explore_html_only(built, tmp_path):
    _, result, _ = built
    out = tmp_path / "out"
    assert result.save(out) == [out / "explore.html"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (out / "explore.html").read_text() == result.page
    assert isinstance(result, ExploreResult)


def test_pooled_model_without_class_token(images):
    torch.manual_seed(0)
    net = create_model("vit_micro_patch4_32", class_token=False, global_pool="avg").eval()
    result = explore([pair(net)], images=[str(images)], num_images=1, device="cpu")
    view = result.views[0]
    assert view.plan.layout.num_prefix_tokens == 0 and view.plan.prefix_names == []
    assert view.rows["applied"][0].prefix.shape[-1] == 0 and '"rollout_of":"patch tokens (mean)"' in result.page


FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not FASHION.exists(), reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_dataset_images_are_labelled_and_grey():
    torch.manual_seed(0)
    net = create_model("vit_micro_patch4_32", in_chans=1).eval()
    grey = InputSpec(size=(32, 32), channels=1, mean=(0.3,), std=(0.35,))
    result = explore([(net, ModelSpec("vit_micro_patch4_32", {}, grey, []))], dataset="fashion-mnist",
                     data_dir=str(FASHION), num_images=2, layers="-1", device="cpu")
    assert result.labels == ["Ankle boot", "Pullover"] and result.names == ["test/0", "test/1"]
    data = json.loads(re.search(r'id="attnlab-data">(.*?)</script>', result.page, re.S).group(1))
    png = Image.open(io.BytesIO(base64.b64decode(data["pictures"][0]["png"][0])))
    assert png.mode == "L" and png.size == (32, 32) and data["images"][1] == {"name": "test/1", "label": "Pullover"}
