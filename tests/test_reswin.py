"""ReSwin: timm Swin with the official ReViT residual attention (methods.md section 7)."""
from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image

import attnlab
import attnlab.adapters as adapters
from attnlab.adapters import reswin as reswin_adapter
from attnlab.capture import run_with_cache
from attnlab.errors import AttnlabError, CheckpointError
from attnlab.models import reswin
from attnlab.models.official_reswin import load_official_reswin, unwrap_official_reswin
from attnlab.models.reswin import geometric_index, official_resample

MICRO = "reswin_micro_patch2_window4_32"
SWIN_MICRO = dict(img_size=32, patch_size=2, window_size=4, embed_dim=32, depths=(2, 2), num_heads=(2, 4),
                  num_classes=10)


def _sharpen(model: torch.nn.Module) -> torch.nn.Module:
    """Random init gives near-uniform attention; sharpen it so that the residual matters."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("qkv.weight"):
                p.mul_(4.0)
            if name.endswith("relative_position_bias_table"):
                p.copy_(torch.randn(p.shape, generator=g))
    return model


def _micro(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return _sharpen(timm.create_model(MICRO, **kwargs)).eval()


@pytest.fixture
def x():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))


@pytest.fixture
def with_adapter(monkeypatch):
    monkeypatch.setattr(adapters, "ADAPTERS", [reswin_adapter.ADAPTER] + list(adapters.ADAPTERS))


# ---------------------------------------------------------------- the reference, from the formulas
def _bias(attn, w: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(w), torch.arange(w), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    rel = (ys[:, None] - ys[None] + w - 1) * (2 * w - 1) + (xs[:, None] - xs[None] + w - 1)
    return attn.relative_position_bias_table[rel].permute(2, 0, 1)               # B_l: [heads, N, N]


def _windows(t: torch.Tensor, w: int) -> torch.Tensor:
    B, H, W, C = t.shape
    return t.view(B, H // w, w, W // w, w, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, w * w, C)


def _mask(H: int, W: int, w: int, s: int) -> torch.Tensor:
    """M_l: -100 between tokens of different regions of the rolled map, per window [nW, N, N]."""
    region = torch.zeros(1, H, W, 1)
    cuts = (slice(0, -w), slice(-w, -s), slice(-s, None))
    for i, hs in enumerate(cuts):
        for j, ws in enumerate(cuts):
            region[:, hs, ws] = 3 * i + j
    lab = _windows(region, w)[..., 0]
    return torch.where(lab[:, None, :] != lab[:, :, None], -100.0, 0.0)


def _cross_stage(res: torch.Tensor, batch: int, heads: int, windows: int) -> torch.Tensor:
    """new (w', h') <- old window 4w' + floor(2h'/nH_old), head 2h' mod nH_old (methods.md 7)."""
    old_heads = res.shape[1]
    old = res.view(batch, -1, old_heads, *res.shape[-2:])
    out = torch.stack([torch.stack([old[:, 4 * wn + (2 * h) // old_heads, (2 * h) % old_heads]
                                    for h in range(heads)], 1) for wn in range(windows)], 1)
    return out.reshape(batch * windows, heads, *res.shape[-2:])


def reference(model, x):
    """Logits and the applied attention of every block, written from methods.md section 7."""
    feats, res, patterns = model.patch_embed(x), None, []
    for stage in model.layers:
        feats = stage.downsample(feats)
        for block in stage.blocks:
            B, H, W, C = feats.shape
            attn, w, s = block.attn, block.window_size[0], block.shift_size[0]
            heads, N = attn.num_heads, w * w
            y = block.norm1(feats)
            y = torch.roll(y, (-s, -s), (1, 2)) if s else y
            q, k, v = F.linear(_windows(y, w), attn.qkv.weight, attn.qkv.bias).view(
                -1, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
            S = (q * (C // heads) ** -0.5) @ k.transpose(-1, -2) + _bias(attn, w)    # S_l
            if res is not None and res.shape != S.shape:
                res = _cross_stage(res, B, heads, (H // w) * (W // w))
            R = S if res is None else 0.5 * S + 0.5 * res                             # R_l
            res = R
            logits = R + (_mask(H, W, w, s).repeat(B, 1, 1)[:, None] if s else 0)    # + M_l, not carried
            A = logits.softmax(-1)
            patterns.append(A)
            out = F.linear((A @ v).transpose(1, 2).reshape(-1, N, C), attn.proj.weight, attn.proj.bias)
            out = out.view(B, H // w, W // w, w, w, C).permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, C)
            feats = feats + (torch.roll(out, (s, s), (1, 2)) if s else out)
            feats = feats + block.mlp(block.norm2(feats))
    feats = model.norm(feats).mean((1, 2))
    return F.linear(feats, model.head.fc.weight, model.head.fc.bias), patterns


# ---------------------------------------------------------------- tests
def test_with_the_residual_off_it_is_timm_swin_exactly(x):
    torch.manual_seed(0)
    ours = timm.create_model(MICRO, residual=False).eval()
    torch.manual_seed(0)
    swin = timm.create_model("swin_tiny_patch4_window7_224", **SWIN_MICRO).eval()
    a, b = ours.state_dict(), swin.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(ours(x), swin(x))


def test_registered_sizes_and_input_sizes():
    for name, size in [("reswin_tiny_patch4_window7_224", 224), ("reswin_small_patch4_window7_224", 224),
                       ("reswin_base_patch4_window7_224", 224), (MICRO, 32)]:
        assert timm.is_model(name)
        assert timm.get_pretrained_cfg(name).input_size == (3, size, size)
    tiny = timm.create_model("reswin_tiny_patch4_window7_224", pretrained=False)
    assert [s.blocks[0].attn.num_heads for s in tiny.layers] == [3, 6, 12, 24]
    info = reswin.reswin_info(tiny)
    assert info["heads_per_stage"] == [3, 6, 12, 24] and info["window_per_stage"] == [7, 7, 7, 7]
    assert info["stages"] == 4 and info["residual"] == "fixed 0.5 / 0.5 mix, official"
    with pytest.raises(AttnlabError, match="gradient checkpointing"):
        tiny.set_grad_checkpointing(True)


def test_the_reference_forward_gives_the_same_logits_and_attention(x, with_adapter):
    model = _micro()
    with torch.no_grad():
        want, patterns = reference(model, x)
        got, cache = run_with_cache(model, x, "*.attn.pattern")
    assert (got - want).abs().max() < 1e-5
    mine = cache.stack("attn.pattern")
    assert len(mine) == len(patterns) == 4
    for a, b in zip(mine, patterns):
        assert (a - b).abs().max() < 1e-5
    swin = timm.create_model("swin_tiny_patch4_window7_224", **SWIN_MICRO).eval()
    swin.load_state_dict(model.state_dict())
    assert (swin(x) - got).abs().max() > 1e-3  # the residual changes the output


def test_cross_stage_resampling_follows_the_index_rule():
    batch, old_windows, old_heads, n = 2, 16, 2, 3
    res = torch.arange(batch * old_windows * old_heads * n * n, dtype=torch.float32).view(
        batch * old_windows, old_heads, n, n)
    new = official_resample(res, torch.Size((batch * 4, 4, n, n)), batch)
    assert torch.equal(new, _cross_stage(res, batch, 4, 4))
    old = res.view(batch, old_windows, old_heads, n, n)
    assert torch.equal(new.view(batch, 4, 4, n, n)[1, 2, 3], old[1, 4 * 2 + (2 * 3) // 2, (2 * 3) % 2])


def test_the_geometric_variant_differs_and_is_deterministic(x):
    official, geometric = _micro(), _micro(residual_mode="geometric")
    assert official.state_dict().keys() == geometric.state_dict().keys()
    with torch.no_grad():
        a, b, c = official(x), geometric(x), geometric(x)
    assert torch.equal(b, c) and torch.isfinite(b).all()
    assert (a - b).abs().max() > 1e-4
    with pytest.raises(AttnlabError, match="residual_mode"):
        timm.create_model(MICRO, residual_mode="spatial")


def test_geometric_index_follows_pixels_through_the_shift():
    regular, shifted = (8, 8, 4, 4, 0, 0), (8, 8, 4, 4, 2, 2)
    index, weight, seen = geometric_index(regular, regular)
    assert seen.all() and torch.equal(index[:, 0], torch.arange(4 * 16 * 16))  # same layout: identity
    index, weight, seen = geometric_index(regular, shifted)
    assert 0 < seen.float().mean() < 1                                          # some pairs were never seen
    assert torch.allclose(weight.sum(-1)[seen.flatten()], torch.ones(int(seen.sum())))


def _official_layout(model: torch.nn.Module, buffers: bool = True) -> dict:
    """``model``'s weights as the official code names them: merging at the end of a stage, a bare
    head, and (``buffers``) the relative position index and shifted-window mask buffers."""
    official = {}
    for k, v in model.state_dict().items():
        if k.startswith("layers.1.downsample."):
            k = "layers.0.downsample." + k[len("layers.1.downsample."):]
        official[k.replace("head.fc.", "head.")] = v
    for i, stage in enumerate(model.layers if buffers else ()):
        for j, block in enumerate(stage.blocks):
            official[f"layers.{i}.blocks.{j}.attn.relative_position_index"] = block.attn.relative_position_index
            if block.attn_mask is not None:
                official[f"layers.{i}.blocks.{j}.attn_mask"] = block.attn_mask
    return official


def test_an_official_layout_checkpoint_converts_to_the_same_logits(x, tmp_path):
    model = _micro()
    official = _official_layout(model)
    path = tmp_path / "reswin.pth"
    torch.save({"epoch": 3, "model_state_dict": {f"module.{k}": v for k, v in official.items()}}, path)
    loaded, spec = load_official_reswin(torch.load(path, weights_only=True), source=str(path))
    assert spec.kind == "official-reswin" and spec.arch == MICRO and spec.input.size == (32, 32)
    assert spec.options["num_heads"] == [2, 4] and spec.options["window_size"] == 4
    with torch.no_grad():
        assert (loaded(x) - model(x)).abs().max() < 1e-6
    for container in ("model", "model_state"):
        assert unwrap_official_reswin({container: official}).keys() == official.keys()
    assert unwrap_official_reswin(official).keys() == official.keys()

    with pytest.raises(CheckpointError, match="alpha"):
        load_official_reswin(dict(official, alpha=torch.tensor([0.5])))
    bad = dict(official)
    bad["layers.0.blocks.0.mlp.fc2.weight"] = bad["layers.0.blocks.0.mlp.fc2.weight"][:, :3]
    with pytest.raises(CheckpointError, match="fit no ReSwin configuration") as err:
        load_official_reswin(bad)
    assert "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="not an official ReSwin"):
        load_official_reswin({"patch_embed.proj.weight": torch.zeros(1)})


def test_capture_leaves_logits_and_model_unchanged(x, with_adapter):
    model = _micro()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        plain = model(x)
        out, cache = run_with_cache(model, x)
        after = model(x)
    assert torch.equal(out, plain) and torch.equal(after, plain)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all("forward" not in m.__dict__ and m.__dict__.get("_observe") is None for m in model.modules())
    assert "layers.1.blocks.1.attn.pattern" in cache and "layers.1.blocks.1.attn.scores" in cache


def test_the_adapter_hands_over_every_point(x):
    from contextlib import ExitStack

    model = _micro()
    _, patterns = reference(model, x)
    seen = {}
    with ExitStack() as stack, torch.no_grad():
        attn = model.layers[1].blocks[1].attn
        reswin_adapter.ADAPTER.install(attn, lambda point, t: seen.__setitem__(point, t), stack)
        model(x)
    assert set(seen) == {"scores", "mixed_scores", "pattern"}  # own_pattern: the capture's softmax(scores)
    assert (seen["pattern"] - patterns[3]).abs().max() < 1e-5
    mask = model.layers[1].blocks[1].attn_mask
    assert torch.allclose(seen["pattern"], (seen["mixed_scores"].view(2, -1, 4, 16, 16)
                                            + mask[None, :, None]).view_as(seen["pattern"]).softmax(-1))
    assert reswin_adapter.ADAPTER.geometry == "window" and reswin_adapter.ADAPTER.matches(attn)


def test_measure_attention_gives_finite_distances_per_layer(tmp_path, with_adapter):
    g = torch.Generator().manual_seed(3)
    for i in range(3):
        pixels = (torch.rand(32, 32, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
    from attnlab.spec import InputSpec

    spec = InputSpec(size=(32, 32), channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    result = attnlab.measure_attention([_micro()], ["ReSwin"], images=[tmp_path], input_spec=spec,
                                       batch_size=2, metrics=["mad_px"], device="cpu")
    rows = result.frame[result.frame["metric"] == "mad_px"]
    assert rows["layer"].nunique() == 4
    assert rows["value"].map(math.isfinite).all()


def test_load_model_reads_official_reswin_files_and_tells_them_from_swin(x, tmp_path):
    import attnlab

    model = _micro()
    official = _official_layout(model)  # with the buffers (the image size is read off the mask)
    ddp = tmp_path / "ddp.pth"
    torch.save({"epoch": 1, "model_state_dict": {f"module.{k}": v for k, v in official.items()}}, ddp)
    loaded, spec = attnlab.load_model(ddp)  # the training code's container says it is ReSwin
    assert spec.kind == "official-reswin"
    with torch.no_grad():
        assert (loaded(x) - model(x)).abs().max() < 1e-6
    bare = tmp_path / "bare.pth"
    torch.save({"model": official}, bare)  # as Microsoft's Swin releases look: ReSwin only when --model says so
    assert attnlab.read_checkpoint(bare).kind == "state_dict"
    loaded, spec = attnlab.load_model(bare, model=MICRO)
    assert spec.kind == "official-reswin"


def test_the_official_reswin_config_is_checked_against_the_weights(x, tmp_path):
    import attnlab

    model = _micro()
    official = _official_layout(model, buffers=False)  # the image size then comes from the config
    ckpt = tmp_path / "reswin.pth"
    torch.save({"epoch": 1, "model_state_dict": {f"module.{k}": v for k, v in official.items()}}, ckpt)

    def config(name: str, **changes) -> str:
        section = {"patch_size": 2, "in_chans": 3, "embed_dim": 32, "depths": [2, 2], "num_heads": [2, 4],
                   "windw_size": 4, "mlp_ratio": 4, "qkv_bias": True, "ape": False, "drop_path": 0.2, **changes}
        lines = ["MODEL:", "  num_classes: 10", "ReSwin:"] + [f"  {k}: {v}" for k, v in section.items()]
        lines += ["DATA:", "  mean: [0.5, 0.5, 0.5]", "  std: [0.25, 0.25, 0.25]", "  crop_size: 32", "  VAL_CROP_RATIO: 0.9"]
        path = tmp_path / name
        path.write_text("\n".join(lines).replace("True", "true").replace("False", "false") + "\n")
        return str(path)

    loaded, spec = attnlab.load_model(ckpt, official_config=config("ok.yaml"))   # the release's misspelt key too
    assert spec.kind == "official-reswin" and spec.input.mean == (0.5, 0.5, 0.5) and spec.input.crop_pct == 0.9
    assert spec.options["drop_path_rate"] == 0.2
    with torch.no_grad():
        assert (loaded(x) - model(x)).abs().max() < 1e-6
    for changes, message in (({"num_heads": [3, 6]}, "num_heads \\[3, 6\\], the weights \\[2, 4\\]"),
                             ({"windw_size": 7}, "window_size 7, the weights 4"),
                             ({"depths": [2, 6]}, "depths \\[2, 6\\], the weights \\[2, 2\\]"),
                             ({"ape": True}, "ape: True")):
        with pytest.raises(CheckpointError, match=message) as err:
            attnlab.load_model(ckpt, official_config=config("bad.yaml", **changes))
        assert "\n" not in str(err.value)
    revit_cfg = tmp_path / "revit.yaml"
    revit_cfg.write_text("ReViT:\n  num_heads: 4\n")
    with pytest.raises(CheckpointError, match="not an official ReSwin config .*it is a ReViT config"):
        attnlab.load_model(ckpt, official_config=revit_cfg)
