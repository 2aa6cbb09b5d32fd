"""``attnlab.explore`` on every family capture supports: Swin windows and MViTv2 pooled grids drawn in
image coordinates, CaiT's patch blocks and class attention, EVA02, BEiT and a Hugging Face ViT; the
rows, cells and metrics against capture, ``attnlab.geometry`` and the studies' own analyser; the size
budget at 224 px. Tiny random models (a few seconds on a CPU)."""
import math

import numpy as np
import pytest
import torch
from PIL import Image

import attnlab
from attnlab.adapters import find_attention
from attnlab.capture import run_with_cache
from attnlab.explore import estimate_bytes, explore
from attnlab.explore.plan import plan_model
from attnlab.explore.quantise import dequantise_rows
from attnlab.geometry import swin_block
from attnlab.spec import InputSpec, ModelSpec
from attnlab.studies.inputs import ImageSelection, LoadedModel
from attnlab.studies.stream import analyse_attention

FAMILIES = {  # name, options, input size
    "swin": ("swin_tiny_patch4_window7_224", dict(img_size=56, depths=(2, 2), num_heads=(2, 4), embed_dim=16), 56),
    "mvitv2": ("mvitv2_tiny", dict(img_size=64), 64),
    "eva02": ("eva02_tiny_patch14_224", dict(img_size=56, depth=2), 56),
    "cait": ("cait_xxs24_224", dict(img_size=64, depth=2, embed_dim=96, num_heads=2), 64),
    "beit": ("beit_base_patch16_224", dict(img_size=64, depth=2, embed_dim=96, num_heads=2), 64),
}


def spec_of(size):
    return InputSpec(size=(size, size), channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)


SHARPEN = {"swin": 8.0}  # its tiny windows start out nearly uniform


def family(name, sharpen=None):
    """A tiny model of a family with sharper attention than random weights give (q and k scaled)."""
    sharpen = SHARPEN.get(name, 3.0) if sharpen is None else sharpen
    arch, options, size = FAMILIES[name]
    torch.manual_seed(0)
    net = attnlab.create_model(arch, num_classes=3, **options).eval()
    with torch.no_grad():
        for f in find_attention(net):
            qkv = getattr(f.module, "qkv", None)
            if isinstance(qkv, torch.nn.Linear):
                qkv.weight[: 2 * qkv.out_features // 3] *= sharpen
            for part in ("q", "k", "q_proj", "k_proj"):
                if isinstance(getattr(f.module, part, None), torch.nn.Linear):
                    getattr(f.module, part).weight *= sharpen
    return net, ModelSpec(arch=arch, options={}, input=spec_of(size), classes=["a", "b", "c"])


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(d / f"{i}.png")
    return d


@pytest.fixture(scope="module")
def pages(images):
    """Each family on its own page, every layer stored, and the inputs it saw."""
    out = {}
    for name in FAMILIES:
        net, spec = family(name)
        result = explore([(net, spec)], [name], images=[str(images)], layers="all", device="cpu")
        x, _ = ImageSelection(images=[str(images)]).stacked(spec.input)
        out[name] = (net, result, x)
    return out


def test_every_family_is_planned_with_its_geometry(pages):
    kinds = {name: [b.geometry for b in result.views[0].plan.blocks] for name, (_, result, _) in pages.items()}
    assert kinds["swin"] == ["window"] * 4 and set(kinds["mvitv2"]) == {"pooled"}
    assert kinds["cait"] == ["grid", "grid", "class", "class"] and set(kinds["eva02"]) == {"grid"}
    swin = pages["swin"][1].views[0].plan
    assert [b.heads for b in swin.blocks] == [2, 2, 4, 4] and swin.heads == 4 and swin.layout is None
    assert [b.windows for b in swin.blocks] == [4, 4, 1, 1]
    assert "shifted 7x7 windows on 14x14 tokens of 4x4 px" in swin.blocks[1].about
    assert set(swin.missing) == {"rollout"} and "windows" in swin.missing["rollout"]
    assert all(result.views[0].gradcam is not None for _, result, _ in pages.values())   # every family
    cait = pages["cait"][1].views[0]
    assert cait.plan.points["applied"][0] == "blocks.0.attn.own_pattern"   # talking heads: each head's softmax
    assert cait.rollout is None and cait.gradcam is not None and cait.plan.prefix_names == ["cls"]


def test_rows_are_each_queries_row_over_its_keys(pages):
    """Stored rows are the captured maps, window by window: row ``w * Nq + i`` is query i of window w."""
    for name, (net, result, x) in pages.items():
        view = result.views[0]
        points = view.plan.points["applied"]
        _, cache = run_with_cache(net, x, points)
        for k, layer in enumerate(view.plan.layers):
            b = view.plan.blocks[layer]
            a = cache[points[layer]].double().reshape(len(x), b.windows, b.heads, b.queries, b.keys)
            a = a.permute(0, 2, 1, 3, 4).flatten(2, 3)
            a = torch.cat([a, a.mean(1, keepdim=True)], 1)
            rows = view.rows["applied"][k]
            p = b.prefix_keys
            assert rows.q.shape == (len(x), b.heads + 1, b.rows, b.keys - p), name
            back = dequantise_rows(rows.q, rows.scale)
            assert np.abs(back - a[..., p:].numpy()).max() <= rows.scale.max() / 2 + 1e-6, (name, layer)
            np.testing.assert_allclose(rows.prefix, a[..., :p].numpy(), rtol=1e-5, atol=1e-7)


def test_metrics_are_the_studies_metrics(pages):
    """Per-image distance and entropy per layer and head equal what ``attnlab globality`` / ``entropy`` measure."""
    for name, (net, result, x) in pages.items():
        ref = analyse_attention(net, [x], label=name, checkpoint="c", metrics=["mad_px", "entropy"], device="cpu").frame
        ref = ref[ref["attention"] == "applied"]
        mine = result.frame
        merged = mine.merge(ref, on=["layer", "head", "metric"], suffixes=("", "_ref"))
        assert len(merged) == len(mine) == len(ref[ref["metric"].isin(["mad_px", "entropy"])]), name
        np.testing.assert_allclose(merged["value"], merged["value_ref"], rtol=1e-5, err_msg=name)
        assert (merged["stage"] == merged["stage_ref"]).all(), name
    swin = pages["swin"][1].frame
    assert sorted(set(zip(swin["layer"], swin["stage"]))) == [(0, 0), (1, 0), (2, 1), (3, 1)]
    cait = pages["cait"][1]
    assert set(cait.frame[cait.frame.metric == "mad_px"]["layer"]) == {0, 1}   # no distance for class attention
    assert np.isnan(cait.views[0].metrics["applied"].query_mad[2]).all()


def _pixels(cells, image):
    """How many of the cells cover each pixel."""
    cover = np.zeros(image, dtype=int)
    for y0, x0, h, w in cells.reshape(-1, 4):
        cover[y0:y0 + h, x0:x0 + w] += 1
    return cover


def test_query_cells_tile_the_image_and_keys_sit_where_they_are(pages):
    swin = pages["swin"][1].views[0].plan
    for b in swin.blocks + pages["mvitv2"][1].views[0].plan.blocks:
        assert (_pixels(b.query_cells((56, 56) if b in swin.blocks else (64, 64)), (56, 56) if b in swin.blocks
                        else (64, 64)) == 1).all(), b.path             # a hovered point picks exactly one query
    shifted = swin.blocks[1]
    g = swin_block(pages["swin"][0].layers[0].blocks[1], (56, 56))
    cells = shifted.key_cells((56, 56))
    centres = np.stack([cells[..., 0] + cells[..., 2] / 2, cells[..., 1] + cells[..., 3] / 2], -1)
    np.testing.assert_allclose(centres, g.key_pos.numpy())             # the keys' true (un-rolled) positions
    assert (cells[..., 2:] == 4).all()
    last = centres[3]                                                  # the wrapped window: keys at both borders
    assert last[:, 0].min() < 12 and last[:, 0].max() > 44
    mvit = pages["mvitv2"][1].views[0].plan.blocks
    assert mvit[0].key_cells((64, 64))[0, :, 2:].tolist() == [[16, 16]] * 16   # keys pooled by 4: 16 px tiles
    assert mvit[3].query_cells((64, 64))[:, 2:].tolist() == [[16, 16]] * 16    # queries pooled by 2 from 8x8


def test_uniform_reference_in_windows(pages):
    """Uniform over the keys a query can reach: every key of an unshifted window; in a shifted window the
    mask closes the keys of other regions, so corner queries reach fewer and nearer keys."""
    from attnlab.metrics.geometric import uniform_in_windows

    blocks = pages["swin"][1].views[0].plan.blocks
    for b in blocks[::2]:                                                # unshifted windows
        mad, entropy = b.uniform()
        assert np.nanmean(mad) == pytest.approx(uniform_in_windows(b.where), rel=1e-6)
        np.testing.assert_allclose(entropy, math.log(49), rtol=1e-6)
    mad, entropy = blocks[1].uniform()                                    # shifted: the wrapped corner window
    assert np.nanmean(mad) < uniform_in_windows(blocks[1].where)
    assert entropy.min() == pytest.approx(math.log(9)) and entropy.max() == pytest.approx(math.log(49))
    corner = mad[3 * 49:].reshape(7, 7)                                   # window 3: 4x4, 4x3, 3x4 and 3x3 regions
    assert corner.max() < 4 * 3 * 1.5


def test_a_hugging_face_vit(images):
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=64, num_labels=3)
    torch.manual_seed(0)
    from attnlab.models.hf import HFVisionModel

    net = HFVisionModel(transformers.ViTForImageClassification(config)).eval()
    spec = ModelSpec(arch="vit", options={}, input=spec_of(32), classes=["a", "b", "c"])
    result = explore([(net, spec)], ["hf"], images=[str(images)], device="cpu")
    view = result.views[0]
    assert view.plan.prefix_names == ["cls"] and view.plan.layout.num_tokens == 65
    assert view.plan.points["applied"] == ["hf.vit.layers.0.attention.pattern", "hf.vit.layers.1.attention.pattern"]
    assert view.rows["applied"][0].q.shape == (2, 3, 65, 64) and '"label":"hf"' in result.page


def _plan(name, size, **options):
    torch.manual_seed(0)
    net = attnlab.create_model(name, **options).eval()
    spec = ModelSpec(name, {}, spec_of(size), [])
    return plan_model(LoadedModel(name, net, spec, "module:x"), None)


def test_swin_and_mvit_at_224_for_8_images_fit_25_mb():
    swin = _plan("swin_tiny_patch4_window7_224", 224)
    assert swin.depth == 12 and swin.layers == [0, 5, 11] and swin.blocks[0].rows == 3136
    assert estimate_bytes([swin], 8) < 25e6
    mvit = _plan("mvitv2_tiny", 224)
    assert mvit.depth == 10 and estimate_bytes([mvit], 8) < 25e6


def test_estimate_bounds_the_page(pages):
    for name, (_, result, x) in pages.items():
        estimate = estimate_bytes([v.plan for v in result.views], len(x))
        assert 0.5 * estimate <= result.size_bytes <= estimate, (name, result.size_bytes, estimate)
