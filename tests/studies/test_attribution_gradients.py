"""``chefer`` and ``attn-grad``: against a reference computed here with autograd, image by image; bad input."""
import numpy as np
import pytest
import torch
from torch import nn

import attnlab
from attnlab.capture import hooks
from attnlab.errors import AttnlabError
from attnlab.spec import InputSpec
from attnlab.studies.attribution import compute_cam, explain, gradient_relevance, upsample_maps

SPEC = InputSpec(size=(32, 32), channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)


def _model(name="vit_micro_patch4_32", **kw):
    torch.manual_seed(0)
    return attnlab.create_model(name, depth=2, **kw).eval()


def reference(model, x, targets, method="chefer", pooled=False):
    """Chefer et al. written out: per image, per layer, the gradient of that image's target logit w.r.t. A_l."""
    store = {}
    with hooks(model, "*.attn.pattern", store.__setitem__, detach=False):
        logits = model(x.clone().requires_grad_(True))
    layers = [store[f"blocks.{i}.attn.pattern"] for i in range(len(model.blocks))]
    p = model.num_prefix_tokens
    out = []
    for b, t in enumerate(targets):
        n = layers[0].shape[-1]
        r = torch.eye(n)
        for a in layers:
            (grad,) = torch.autograd.grad(logits[b, t], a, retain_graph=True)
            cam = (grad[b] * a[b]).clamp(min=0).mean(dim=0)      # mean over heads of (dA * A)^+
            r = r + cam @ r if method == "chefer" else cam         # attn-grad: the last layer's alone
        rows = r[p:, p:].mean(dim=0) if pooled else r[0, p:]       # pooled: mean of patch rows; else class row
        out.append(rows.reshape(8, 8))
    return torch.stack(out).detach()


@pytest.mark.parametrize("method", ["chefer", "attn-grad"])
@pytest.mark.parametrize("name, kw, pooled", [
    ("vit_micro_patch4_32", {}, False),
    ("revit_micro_patch4_32", {}, False),                                  # ReViT: A = softmax(R_l)
    ("revit_micro_patch4_32", dict(class_token=False, global_pool="avg"), True),
])
def test_against_an_autograd_reference(method, name, kw, pooled):
    model = _model(name, **kw)
    x = torch.randn(3, 3, 32, 32)
    targets = [0, 4, 9]
    got = gradient_relevance(model, x, targets, method)
    want = reference(model, x, targets, method, pooled)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(got[0], got[1])
    assert all(p.grad is None for p in model.parameters())        # no parameter's .grad is touched


def test_maps_are_batched_upsampled_and_class_specific():
    model = _model()
    x = torch.randn(5, 3, 32, 32)
    targets = [1, 2, 3, 1, 2]
    maps = compute_cam(model, x, "chefer", targets, batch_size=2)
    assert maps.shape == (5, 32, 32) and maps.min() >= 0 and maps.max() <= 1
    np.testing.assert_allclose(maps, upsample_maps(reference(model, x, targets), (32, 32)), atol=1e-4)
    other = compute_cam(model, x, "chefer", [7] * 5)
    assert not np.allclose(maps, other)                             # the target class matters


def test_frozen_weights_and_no_grad_are_fine():
    model = _model()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        got = gradient_relevance(model, x, [0, 1])
    for p in model.parameters():
        p.requires_grad_(True)
    torch.testing.assert_close(got, reference(model, x, [0, 1]), rtol=1e-4, atol=1e-6)


def test_inference_mode_is_one_line():
    model, x = _model(), torch.randn(1, 3, 32, 32)
    with torch.inference_mode():
        with pytest.raises(AttnlabError, match="chefer needs gradients of the attention, but torch.inference_mode"):
            gradient_relevance(model, x, [0])
        with pytest.raises(AttnlabError, match="attn-grad needs gradients, but torch.inference_mode is active"):
            explain([model], images=["nowhere"], methods="eigencam,attn-grad", input_spec=SPEC)  # before any work


def test_a_forward_that_detaches_is_one_line():
    model = _model()
    forward = model.forward
    model.forward = lambda x: forward(x).detach()
    with pytest.raises(AttnlabError, match="the logits are not in the autograd graph"):
        gradient_relevance(model, torch.randn(1, 3, 32, 32), [0])
    block = model.blocks[1]
    block_forward = block.forward
    block.forward = lambda x, **kw: block_forward(x.detach(), **kw)   # cuts the first layer off the logits
    model.forward = forward
    with pytest.raises(AttnlabError, match=r"do not depend on the attention at blocks\.0\.attn\.pattern"):
        gradient_relevance(model, torch.randn(1, 3, 32, 32), [0])


class NoAttention(nn.Module):
    """Has blocks and a norm1 (so the CAM layer resolves) but no attention attnlab can capture."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList([nn.Module()])
        self.blocks[0].norm1 = nn.LayerNorm(3)
        self.head = nn.Linear(3, 10)

    def forward(self, x):
        return self.head(self.blocks[0].norm1(x.mean(dim=(2, 3))))


def test_no_capturable_attention_is_one_line(tmp_path):
    with pytest.raises(AttnlabError, match="chefer needs the model's attention: NoAttention has no ViT attention"):
        compute_cam(NoAttention(), torch.randn(1, 3, 32, 32), "chefer", [0])
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(AttnlabError, match="^plain: chefer needs the model's attention") as info:
        explain([NoAttention()], ["plain"], images=[tmp_path], methods="chefer", input_spec=SPEC, device="cpu")
    assert "\n" not in str(info.value)
