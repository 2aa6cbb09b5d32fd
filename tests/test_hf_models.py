"""Hugging Face vision transformers from a local save_pretrained folder, offline: load, describe, capture."""
import os

import pytest
import torch

import attnlab
from attnlab.errors import CheckpointError

transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("hf") / "tiny-vit"
    config = transformers.ViTConfig(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=64, num_labels=3,
                                    id2label={0: "cat", 1: "dog", 2: "fox"}, label2id={"cat": 0, "dog": 1, "fox": 2})
    torch.manual_seed(0)
    transformers.ViTForImageClassification(config).save_pretrained(d)
    return d


def test_load_a_save_pretrained_folder(hf_folder):
    for source in (hf_folder, f"hf:{hf_folder}"):
        model, spec = attnlab.load_model(source)
        assert spec.arch == "hf:vit" and spec.classes == ["cat", "dog", "fox"] and spec.kind == "hf"
        assert tuple(spec.input.size) == (32, 32)
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)
        layout = attnlab.TokenLayout.from_model(model, (32, 32))
        assert (layout.num_prefix_tokens, layout.grid_size, layout.patch_size) == (1, (8, 8), (4, 4))


def test_capture_names_and_the_model_left_as_found(hf_folder):
    model, _ = attnlab.load_model(hf_folder)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        out, cache = attnlab.run_with_cache(model, x, "*.pattern")
    assert list(cache) == ["hf.vit.layers.0.attention.pattern", "hf.vit.layers.1.attention.pattern"]
    assert torch.allclose(out, ref, atol=1e-6) and cache.layout.num_patches == 64
    assert "forward" not in vars(model.hf.vit.layers[0].attention)


def test_a_folder_without_weights_is_one_line(tmp_path, hf_folder):
    empty = tmp_path / "config-only"
    empty.mkdir()
    (empty / "config.json").write_text((hf_folder / "config.json").read_text())
    with pytest.raises(CheckpointError, match="no weights"):
        attnlab.load_model(empty)


def test_an_unknown_id_offline_is_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="could not load the Hugging Face model") as e:
        attnlab.load_model("hf:nobody/no-such-model")
    assert "\n" not in str(e.value)


def test_info_describes_it(hf_folder):
    from typer.testing import CliRunner

    from attnlab.cli import app

    r = CliRunner().invoke(app, ["info", "--ckpt", str(hf_folder)])
    assert r.exit_code == 0, r.output
    assert "hf:vit" in r.stdout and "depth 2, heads 2" in r.stdout and "8x8 patch grid" in r.stdout
    assert os.path.basename(str(hf_folder)) in r.stdout
