"""``attnlab info``'s description: from an attnlab checkpoint alone, equal to the built model's."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch

import attnlab
from attnlab import CheckpointError, load_model, read_checkpoint, save_checkpoint
from attnlab.describe import describe, describe_checkpoint, summarize
from attnlab.models import create_model

CASES = [
    ("vit_micro_patch4_32", {}),
    ("revit_micro_patch4_32", {"in_chans": 1}),
    ("revit_micro_patch4_32", {"alpha_per_layer": True, "num_classes": 4}),
    ("revit_micro_patch4_32", {"learn_alpha": False, "alpha": 0.25}),
    ("revit_micro_patch4_32", {"learn_alpha": False, "alpha_per_layer": True}),
    ("vit_cb_micro_patch4_32", {"cb_learnable_scale": True, "cb_placement": "block"}),
    ("revit_cb_micro_patch4_32", {"class_token": False, "global_pool": "avg", "img_size": 48}),
    ("vit_micro_patch4_32", {"reg_tokens": 2, "pos_embed": "none", "drop_path_rate": 0.1}),
    ("vit_micro_patch4_32", {"patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2, "mlp_ratio": 3.0}),
    ("vit_tiny_patch16_224", {"img_size": 64, "num_classes": 3}),
]


@pytest.mark.parametrize("arch, options", CASES)
def test_a_checkpoint_is_described_as_its_built_model_is(tmp_path, arch, options):
    model = create_model(arch, **options)
    path = save_checkpoint(model, tmp_path / "m.pt", provenance={"seed": 1})
    loaded, spec = load_model(path)
    fast = describe_checkpoint(read_checkpoint(path))
    assert fast is not None
    assert fast == describe(loaded, spec)
    assert summarize(path) == fast


def test_sources_the_header_does_not_explain_are_built(tmp_path):
    plain = create_model("vit_micro_patch4_32")
    torch.save(plain.state_dict(), tmp_path / "w.pth")
    assert summarize(tmp_path / "w.pth", model="vit_micro_patch4_32")["kind"] == "state_dict"
    # an architecture outside the zoo, and an option no shape shows
    outside = save_checkpoint(timm.create_model("vit_tiny_patch16_384", img_size=32, patch_size=16), tmp_path / "o.pt")
    assert describe_checkpoint(read_checkpoint(outside)) is None
    assert summarize(outside)["grid"] == [2, 2]
    odd = save_checkpoint(create_model("vit_micro_patch4_32", no_embed_class=True), tmp_path / "n.pt")
    assert describe_checkpoint(read_checkpoint(odd)) is None
    assert summarize(odd)["num_params"] == sum(p.numel() for p in create_model("vit_micro_patch4_32",
                                                                               no_embed_class=True).parameters())


def test_weights_that_contradict_their_header_get_the_fit_error(tmp_path):
    model = create_model("vit_micro_patch4_32")
    path = save_checkpoint(model, tmp_path / "m.pt")
    raw = torch.load(path, weights_only=True)
    raw["options"] = {"depth": 4}  # the weights have 6 blocks
    torch.save(raw, path)
    assert describe_checkpoint(read_checkpoint(path)) is None
    with pytest.raises(CheckpointError, match="do not fit vit_micro_patch4_32"):
        summarize(path)


def test_info_on_an_attnlab_checkpoint_imports_no_timm(tmp_path):
    path = save_checkpoint(create_model("revit_micro_patch4_32", in_chans=1), tmp_path / "r.pt")
    code = ("import sys; from typer.testing import CliRunner; from attnlab.cli import app; "
            f"r = CliRunner().invoke(app, ['info', '--ckpt', {str(path)!r}]); assert r.exit_code == 0, r.output; "
            "assert '807,051' in r.stdout; print('timm' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "False", proc.stderr


def test_the_module_no_longer_shadows_the_standard_library():
    package = Path(attnlab.__file__).parent
    assert (package / "describe.py").is_file() and not (package / "inspect.py").exists()
    proc = subprocess.run([sys.executable, "-c", "import inspect; print(inspect.__file__)"],
                          capture_output=True, text=True, cwd=package, timeout=60)
    assert os.path.dirname(proc.stdout.strip()) != str(package)
