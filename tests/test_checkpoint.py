"""Self-describing checkpoints, other people's weights, and the errors bad files get."""
import json
import os
import pickle
import subprocess
import sys

import pytest
import timm
import torch

import attnlab
from attnlab import CheckpointError, ModelNameError, load_model, read_checkpoint, save_checkpoint
from attnlab.models import create_model
from attnlab.spec import InputSpec


def _same_outputs(a, b, shape=(2, 3, 32, 32)):
    x = torch.randn(*shape)
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@pytest.mark.parametrize("name", ["vit_micro_patch4_32", "revit_micro_patch4_32", "vit_cb_micro_patch4_32"])
def test_round_trip_rebuilds_from_the_file_alone(tmp_path, name, suffix):
    model = create_model(name, in_chans=1, num_classes=4, cb_learnable_scale=True) if "cb" in name \
        else create_model(name, in_chans=1, num_classes=4)
    spec_in = InputSpec(size=(32, 32), channels=1, mean=(0.286,), std=(0.353,))
    path = save_checkpoint(model, tmp_path / f"m{suffix}", classes=["a", "b", "c", "d"], input_spec=spec_in,
                           provenance={"dataset": "fashion-mnist", "epochs": 3, "seed": 7, "metrics": {"top1": 0.5}})
    loaded, spec = load_model(path)
    assert not loaded.training
    assert _same_outputs(model, loaded, (2, 1, 32, 32))
    assert spec.arch == name and spec.family == name.split("_micro")[0]
    assert spec.classes == ["a", "b", "c", "d"]
    assert spec.input == spec_in
    assert spec.provenance["dataset"] == "fashion-mnist" and spec.provenance["metrics"] == {"top1": 0.5}
    assert spec.provenance["attnlab_version"] == attnlab.__version__
    assert spec.provenance["torch_version"] == str(torch.__version__)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary files left


def test_checkpoint_holds_only_plain_data(tmp_path):
    path = save_checkpoint(create_model("revit_micro_patch4_32"), tmp_path / "m.pt")
    raw = torch.load(path, weights_only=True)
    header = {k: v for k, v in raw.items() if k != "state_dict"}
    assert json.loads(json.dumps(header)) == header
    assert raw["format"] == "attnlab-checkpoint" and raw["arch"] == "revit_micro_patch4_32"
    assert "alpha" in raw["state_dict"]


def test_timm_models_round_trip(tmp_path):
    model = timm.create_model("vit_tiny_patch16_224", num_classes=3, img_size=64)
    path = save_checkpoint(model, tmp_path / "t.pt")
    loaded, spec = load_model(path)
    assert spec.arch == "vit_tiny_patch16_224" and spec.options == {"num_classes": 3, "img_size": 64}
    assert _same_outputs(model, loaded, (1, 3, 64, 64))


def test_unserialisable_metadata_fails_and_writes_nothing(tmp_path):
    with pytest.raises(CheckpointError, match="plain data"):
        save_checkpoint(create_model("vit_micro_patch4_32"), tmp_path / "m.pt", provenance={"f": object()})
    assert list(tmp_path.iterdir()) == []


def test_wrong_number_of_class_names(tmp_path):
    with pytest.raises(CheckpointError, match="3 class names given for a model with 10 outputs"):
        save_checkpoint(create_model("vit_micro_patch4_32"), tmp_path / "m.pt", classes=["a", "b", "c"])


def test_plain_state_dict_needs_model_name_and_reads_shapes(tmp_path):
    model = create_model("revit_micro_patch4_32", num_classes=5, in_chans=1)
    path = tmp_path / "w.pth"
    torch.save(model.state_dict(), path)
    with pytest.raises(CheckpointError, match="--model NAME"):
        load_model(path)
    loaded, spec = load_model(path, model="revit_micro_patch4_32")
    assert spec.kind == "state_dict" and spec.options == {"num_classes": 5, "in_chans": 1}
    assert _same_outputs(model, loaded, (2, 1, 32, 32))
    # the same weights wrapped the way training scripts often save them
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, tmp_path / "wrapped.pth")
    loaded, _ = load_model(tmp_path / "wrapped.pth", model="revit_micro_patch4_32")
    assert _same_outputs(model, loaded, (2, 1, 32, 32))


def test_plain_safetensors_state_dict(tmp_path):
    from safetensors.torch import save_file

    model = create_model("vit_cb_micro_patch4_32")
    save_file(model.state_dict(), tmp_path / "w.safetensors")
    loaded, spec = load_model(tmp_path / "w.safetensors", model="vit_cb_micro_patch4_32")
    assert spec.kind == "state_dict" and _same_outputs(model, loaded)


def test_weights_that_do_not_fit_name_the_first_bad_keys(tmp_path):
    torch.save(create_model("vit_micro_patch4_32").state_dict(), tmp_path / "vit.pth")
    with pytest.raises(CheckpointError, match=r"1 missing \(first: alpha\)"):
        load_model(tmp_path / "vit.pth", model="revit_micro_patch4_32")
    with pytest.raises(CheckpointError, match=r"mis-shaped \(first: cls_token is \[1, 1, 128\] in the file, "
                                              r"\[1, 1, 192\] in the model\)"):
        load_model(tmp_path / "vit.pth", model="vit_tiny_patch4_32")
    torch.save(create_model("vit_cb_micro_patch4_32", cb_learnable_scale=True).state_dict(), tmp_path / "cbs.pth")
    with pytest.raises(CheckpointError, match=r"6 unexpected \(first: blocks.0.broadcast.scale\)"):
        load_model(tmp_path / "cbs.pth", model="vit_cb_micro_patch4_32")
    # the CB_S option makes the same file fit
    load_model(tmp_path / "cbs.pth", model="vit_cb_micro_patch4_32", cb_learnable_scale=True)


def test_missing_folder_empty_truncated_and_garbage_files(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_model(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="is a folder"):
        load_model(tmp_path)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_model(tmp_path / "empty.pt")
    good = save_checkpoint(create_model("vit_micro_patch4_32"), tmp_path / "good.pt").read_bytes()
    for name, data in [("trunc.pt", good[: len(good) // 2]), ("garbage.pt", os.urandom(4096)),
                       ("trunc.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": 1")]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError, match="truncated or corrupt"):
            load_model(tmp_path / name)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["pickle", "torch"])
def test_code_running_pickles_are_refused_not_executed(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    payload = {"state_dict": {"w": [0.0]}, "x": _Exploit(marker)}
    if writer == "pickle":
        path.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"refused to load .*could run code") as info:
        load_model(path, model="vit_micro_patch4_32")
    assert "system" in str(info.value)
    assert not marker.exists()


def test_model_names(tmp_path):
    with pytest.raises(ModelNameError, match="did you mean revit_micro_patch4_32"):
        load_model("revit_mikro_patch4_32")
    with pytest.raises(CheckpointError, match="add --pretrained"):
        load_model("revit_micro_patch4_32")
    with pytest.raises(CheckpointError, match="no pretrained weights|could not load pretrained"):
        load_model("revit_micro_patch4_32", pretrained=True)
    path = save_checkpoint(create_model("vit_micro_patch4_32"), tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match="holds a vit_micro_patch4_32, not a revit_micro_patch4_32"):
        load_model(path, model="revit_micro_patch4_32")
    with pytest.raises(CheckpointError, match="drop --pretrained"):
        load_model(path, pretrained=True)


def test_future_format_version_is_refused(tmp_path):
    path = save_checkpoint(create_model("vit_micro_patch4_32"), tmp_path / "m.pt")
    raw = torch.load(path, weights_only=True)
    raw["format_version"] = 99
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="format version 99"):
        read_checkpoint(path)


def test_pretrained_uses_the_hub_and_fails_in_one_line_offline(tmp_path):
    """The real hub code path: offline (no network, empty cache) it must fail with one clear line."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), TORCH_HOME=str(tmp_path / "th"))
    proc = subprocess.run([sys.executable, "-m", "attnlab", "info", "--ckpt", "vit_tiny_patch16_224", "--pretrained"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: could not load pretrained weights for vit_tiny_patch16_224")
