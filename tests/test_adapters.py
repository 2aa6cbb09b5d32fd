"""Capture on every supported family: the captured attention equals the module's own unfused computation,
the logits are unchanged by the capture, and the model is left exactly as found."""
import pytest
import timm
import torch

from attnlab.adapters import find_attention, supported_families
from attnlab.capture import NoAttentionError, hook_point_names, run_with_cache

TIMM = {
    "eva02_tiny_patch14_224": dict(img_size=56),
    "vit_medium_patch16_rope_reg1_gap_256": dict(img_size=64, depth=2, embed_dim=96, num_heads=2),
    "beit_base_patch16_224": dict(img_size=64, depth=2, embed_dim=96, num_heads=2),
    "vit_relpos_small_patch16_224": dict(img_size=64, depth=2, embed_dim=96, num_heads=2),
    "cait_xxs24_224": dict(img_size=64, depth=2, embed_dim=96, num_heads=2),
    "swin_tiny_patch4_window7_224": dict(img_size=112, depths=(2, 2), num_heads=(2, 4), embed_dim=32),
}


def build(name):
    torch.manual_seed(0)
    kw = TIMM[name]
    model = timm.create_model(name, pretrained=False, num_classes=5, **kw).eval()
    return model, torch.randn(2, 3, kw["img_size"], kw["img_size"])


def unfused_reference(model, x):
    """The modules' own hand-written path (fused_attn off): the attention is what enters attn_drop."""
    found = find_attention(model)
    seen, handles, flags = {}, [], []
    for f in found:
        if hasattr(f.module, "fused_attn"):
            flags.append((f.module, f.module.fused_attn))
            f.module.fused_attn = False
        handles.append(f.module.attn_drop.register_forward_hook(
            lambda mod, args, out, path=f.path: seen.__setitem__(path, args[0].detach().clone())))
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        for h in handles:
            h.remove()
        for module, flag in flags:
            module.fused_attn = flag
    return logits, seen


def snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            {p: (dict(m.__dict__).get("forward"), getattr(m, "fused_attn", None)) for p, m in model.named_modules()})


@pytest.mark.parametrize("name", sorted(TIMM))
def test_captured_pattern_equals_the_module_own_unfused_attention(name):
    model, x = build(name)
    ref_logits, reference = unfused_reference(model, x)
    before = snapshot(model)
    with torch.no_grad():
        logits, cache = run_with_cache(model, x, "*.pattern")
    assert set(reference) == {n.rsplit(".", 1)[0] for n in cache}
    for path, attn in reference.items():
        torch.testing.assert_close(cache[f"{path}.pattern"], attn, atol=1e-5, rtol=0)
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=0)
    after = snapshot(model)
    assert before[1] == after[1] and all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    with torch.no_grad():
        assert torch.equal(model(x), logits) or torch.allclose(model(x), logits, atol=1e-5)


def test_swin_names_follow_the_module_path_and_include_the_shift_mask():
    model, x = build("swin_tiny_patch4_window7_224")
    names = hook_point_names(model)
    assert "layers.0.blocks.1.attn.scores" in names and "layers.1.blocks.0.attn.pattern" in names
    assert "layers.0.blocks.0.resid_post" in names
    with torch.no_grad():
        _, cache = run_with_cache(model, x, "layers.0.blocks.1.attn.scores")
    scores = cache["layers.0.blocks.1.attn.scores"]  # the shifted block: timm masks pairs with -100
    assert (scores < -50).any() and scores.shape[-2:] == (49, 49)
    with torch.no_grad():
        _, cache = run_with_cache(model, x, "layers.0.blocks.0.attn.scores")
    assert not (cache["layers.0.blocks.0.attn.scores"] < -50).any()  # the regular block has no mask


def test_cait_class_attention_has_one_query():
    model, x = build("cait_xxs24_224")
    with torch.no_grad():
        _, cache = run_with_cache(model, x, "blocks_token_only.*.pattern")
    (name, attn), = list(cache.items())[:1]
    assert name == "blocks_token_only.0.attn.pattern" and attn.shape[-2] == 1
    torch.testing.assert_close(attn.sum(-1), torch.ones_like(attn.sum(-1)))


def test_mvitv2_pooled_attention_against_an_explicit_reference():
    from timm.models.mvitv2 import cal_rel_pos_type, reshape_post_pool, reshape_pre_pool

    torch.manual_seed(0)
    model = timm.create_model("mvitv2_tiny", pretrained=False, num_classes=5, img_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    inputs = {}
    found = find_attention(model)
    handles = [f.module.register_forward_pre_hook(lambda m, args, path=f.path: inputs.__setitem__(path, args))
               for f in found]
    with torch.no_grad():
        ref_logits = model(x)
    for h in handles:
        h.remove()
    with torch.no_grad():
        logits, cache = run_with_cache(model, x, "*.pattern")
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=0)
    for f in found:
        a, (t, feat) = f.module, inputs[f.path]
        with torch.no_grad():  # MultiScaleAttention's logits written out from its parameters
            B, N, _ = t.shape
            q, k, v = a.qkv(t).reshape(B, N, 3, a.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
            q_size = k_size = feat
            if a.pool_q is not None:
                q, tok = reshape_pre_pool(q, feat, a.has_cls_token)
                q, q_size = reshape_post_pool(a.pool_q(q), a.num_heads, tok)
            if a.norm_q is not None:
                q = a.norm_q(q)
            if a.pool_k is not None:
                k, tok = reshape_pre_pool(k, feat, a.has_cls_token)
                k, k_size = reshape_post_pool(a.pool_k(k), a.num_heads, tok)
            if a.norm_k is not None:
                k = a.norm_k(k)
            s = (q * a.scale) @ k.transpose(-2, -1)
            if a.rel_pos_type == "spatial":
                s = cal_rel_pos_type(s, q, a.has_cls_token, q_size, k_size, a.rel_pos_h, a.rel_pos_w)
        torch.testing.assert_close(cache[f"{f.path}.pattern"], s.softmax(-1), atol=1e-5, rtol=0)


HF = ["ViT", "DeiT", "Dinov2", "Dinov2WithRegisters", "CLIPVision"]


@pytest.mark.parametrize("impl", ["eager", "sdpa"])
@pytest.mark.parametrize("kind", HF)
def test_hugging_face_models_under_either_attention_implementation(kind, impl):
    transformers = pytest.importorskip("transformers")
    config_cls = getattr(transformers, f"{kind}Config")
    model_cls = getattr(transformers, {"ViT": "ViTForImageClassification", "DeiT": "DeiTForImageClassification",
                                       "CLIPVision": "CLIPVisionModel"}.get(kind, f"{kind}Model"))
    extra = {"num_register_tokens": 2} if kind == "Dinov2WithRegisters" else {}
    config = config_cls(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, attn_implementation=impl, **extra)
    torch.manual_seed(0)
    model = model_cls(config).eval()
    x = torch.randn(2, 3, 32, 32)

    def main(out):
        return out.logits if hasattr(out, "logits") else out.last_hidden_state

    with torch.no_grad():
        ref = main(model(pixel_values=x))
        out, cache = run_with_cache(model, x, "*.pattern")
    torch.testing.assert_close(main(out), ref, atol=1e-5, rtol=0)
    patterns = list(cache.values())
    assert len(patterns) == 2
    if impl == "eager":  # Hugging Face's own attention weights
        with torch.no_grad():
            own = model(pixel_values=x, output_attentions=True).attentions
        for a, b in zip(own, patterns):
            torch.testing.assert_close(b, a, atol=1e-6, rtol=0)
    for p in patterns:
        torch.testing.assert_close(p.sum(-1), torch.ones_like(p.sum(-1)))


def test_unsupported_model_names_what_it_found_and_what_is_supported():
    class MyAttention(torch.nn.Module):
        def forward(self, x):
            return x

    model = torch.nn.Sequential(MyAttention())
    with pytest.raises(NoAttentionError) as e:
        hook_point_names(model)
    msg = str(e.value)
    assert "found MyAttention" in msg and "timm Eva" in msg and "\n" not in msg
    assert len(supported_families()) >= 9
