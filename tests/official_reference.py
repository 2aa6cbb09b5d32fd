"""An independent re-statement of the official ReViT forward pass (eval mode), from its
published semantics, used as the oracle for attnlab's converter. Plain torch ops only:
nothing from attnlab or timm."""
import torch
import torch.nn.functional as F


def random_official_state_dict(embed_dim=128, depth=3, patch=8, img=32, in_chans=3, num_classes=7,
                               mlp_ratio=4, cls_token=False, alpha=True, abs_pos=True, seed=0):
    """Random weights with the official key layout (MViTv2 code base, ReViT config)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, std=0.2):
        return torch.randn(*shape, generator=g) * std

    grid = img // patch
    sd = {"patch_embed.proj.weight": r(embed_dim, in_chans, patch, patch), "patch_embed.proj.bias": r(embed_dim)}
    if cls_token:
        sd["cls_token"] = r(1, 1, embed_dim)
    if abs_pos:
        sd["pos_embed"] = r(1, grid * grid + int(cls_token), embed_dim)
    hidden = embed_dim * mlp_ratio
    for i in range(depth):
        p = f"blocks.{i}."
        sd.update({
            p + "norm1.weight": 1 + r(embed_dim), p + "norm1.bias": r(embed_dim),
            p + "attn.qkv.weight": r(3 * embed_dim, embed_dim), p + "attn.qkv.bias": r(3 * embed_dim),
            p + "attn.proj.weight": r(embed_dim, embed_dim), p + "attn.proj.bias": r(embed_dim),
            p + "norm2.weight": 1 + r(embed_dim), p + "norm2.bias": r(embed_dim),
            p + "mlp.fc1.weight": r(hidden, embed_dim), p + "mlp.fc1.bias": r(hidden),
            p + "mlp.fc2.weight": r(embed_dim, hidden), p + "mlp.fc2.bias": r(embed_dim),
        })
    sd.update({"norm.weight": 1 + r(embed_dim), "norm.bias": r(embed_dim),
               "head.projection.weight": r(num_classes, embed_dim), "head.projection.bias": r(num_classes)})
    if alpha:
        sd["alpha"] = torch.tensor([0.3])
    return sd


def official_forward(sd, x, num_heads):
    """Eval-mode output of the official ReViT (class probabilities: its head applies softmax)."""
    w = sd["patch_embed.proj.weight"]
    D, p = w.shape[0], w.shape[-1]
    t = F.conv2d(x, w, sd["patch_embed.proj.bias"], stride=p).flatten(2).transpose(1, 2)
    B = t.shape[0]
    if "cls_token" in sd:
        t = torch.cat([sd["cls_token"].expand(B, -1, -1), t], dim=1)
    if "pos_embed" in sd:
        t = t + sd["pos_embed"]
    alpha = float(sd["alpha"]) if "alpha" in sd else 0.5
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    hd = D // num_heads
    res = None
    for i in range(depth):
        p_ = f"blocks.{i}."
        h = F.layer_norm(t, (D,), sd[p_ + "norm1.weight"], sd[p_ + "norm1.bias"], eps=1e-6)
        N = h.shape[1]
        qkv = F.linear(h, sd[p_ + "attn.qkv.weight"], sd[p_ + "attn.qkv.bias"]).reshape(B, N, 3, num_heads, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        logits = (q * hd ** -0.5) @ k.transpose(-2, -1)
        if res is not None:
            logits = alpha * logits + (1 - alpha) * res
        res = logits
        a = (logits.softmax(-1) @ v).transpose(1, 2).reshape(B, N, D)
        t = t + F.linear(a, sd[p_ + "attn.proj.weight"], sd[p_ + "attn.proj.bias"])
        h = F.layer_norm(t, (D,), sd[p_ + "norm2.weight"], sd[p_ + "norm2.bias"], eps=1e-6)
        h = F.linear(F.gelu(F.linear(h, sd[p_ + "mlp.fc1.weight"], sd[p_ + "mlp.fc1.bias"])),
                     sd[p_ + "mlp.fc2.weight"], sd[p_ + "mlp.fc2.bias"])
        t = t + h
    t = F.layer_norm(t, (D,), sd["norm.weight"], sd["norm.bias"], eps=1e-6)
    pooled = t[:, 0] if "cls_token" in sd else t.mean(1)
    return F.linear(pooled, sd["head.projection.weight"], sd["head.projection.bias"]).softmax(dim=1)
