"""Checkpoints of the official ReViT code load as attnlab ReViT models with the same output."""
import pytest
import torch
import yaml

from attnlab import CheckpointError, load_model
from official_reference import official_forward, random_official_state_dict


def _save(tmp_path, sd, name="official.pyth"):
    path = tmp_path / name
    torch.save({"epoch": 300, "model_state": sd, "optimizer_state": {}}, path)
    return path


@pytest.mark.parametrize("cls_token", [False, True])
@pytest.mark.parametrize("alpha", [True, False])
def test_converted_model_softmax_equals_official_output(tmp_path, cls_token, alpha):
    sd = random_official_state_dict(embed_dim=128, cls_token=cls_token, alpha=alpha)  # 128 / 64 = 2 heads
    model, spec = load_model(_save(tmp_path, sd))
    assert spec.kind == "official-revit"
    assert spec.options["num_heads"] == 2 and spec.options["depth"] == 3 and spec.options["patch_size"] == 8
    assert spec.options["class_token"] is cls_token and spec.options["learn_alpha"] is alpha
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        logits = model(x)
        expected = official_forward(sd, x, num_heads=2)
    assert not torch.allclose(logits.sum(1), torch.ones(4))  # logits, not probabilities
    torch.testing.assert_close(logits.softmax(1), expected, rtol=1e-5, atol=1e-6)


def test_official_config_gives_the_number_of_heads(tmp_path):
    sd = random_official_state_dict(embed_dim=128, depth=2)
    cfg = {"ReViT": {"embed_dim": 128, "num_heads": 4, "patch_kernel": [8, 8], "patch_stride": [8, 8],
                     "patch_padding": [0, 0], "depth": 2, "cls_embed_on": False},
           "DATA": {"crop_size": 32, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    path = _save(tmp_path, sd)
    model, spec = load_model(path, official_config=tmp_path / "cfg.yaml")
    assert spec.options["num_heads"] == 4 and spec.input.mean == (0.5, 0.5, 0.5)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x).softmax(1), official_forward(sd, x, num_heads=4), rtol=1e-5, atol=1e-6)
        # without the config the official head width (64) gives 2 heads: a different model
        default, _ = load_model(path)
        assert not torch.allclose(default(x).softmax(1), official_forward(sd, x, num_heads=4), atol=1e-4)


def test_bare_official_state_dict_and_timm_filter(tmp_path):
    sd = random_official_state_dict()
    torch.save(sd, tmp_path / "bare.pth")
    model, spec = load_model(tmp_path / "bare.pth")
    assert spec.kind == "official-revit" and spec.num_classes == 7


def test_multiscale_and_unsupported_configs_are_refused(tmp_path):
    sd = random_official_state_dict()
    sd["blocks.1.attn.pool_q.weight"] = torch.zeros(64, 1, 3, 3)
    with pytest.raises(CheckpointError, match="multiscale"):
        load_model(_save(tmp_path, sd))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"ReViT": {"patch_kernel": [7, 7], "patch_stride": [4, 4], "patch_padding": [3, 3]}}))
    with pytest.raises(CheckpointError, match="overlapping patch embeddings"):
        load_model(_save(tmp_path, random_official_state_dict(), "b.pyth"), official_config=cfg)
    (tmp_path / "bad.yaml").write_text("MODEL: {name: x}\n")
    with pytest.raises(CheckpointError, match="no 'ReViT:' section"):
        load_model(_save(tmp_path, random_official_state_dict(), "c.pyth"), official_config=tmp_path / "bad.yaml")
