"""The GPU path's choices, checked on a CPU: autocast dtype, loss scaling, fused AdamW, torch.compile."""
from __future__ import annotations

import pytest
import torch

from attnlab.errors import AttnlabError
from attnlab.train import TrainConfig, train
from attnlab.train import accel
from attnlab.train.accel import autocast_dtype, fused_adamw, grad_scaler
from attnlab.train.optim import build_optimizer
from attnlab.train.synthetic import write_fashion_mnist_idx

CUDA, CPU = torch.device("cuda", 0), torch.device("cpu")
yes, no = (lambda: True), (lambda: False)


def test_autocast_dtype_per_device_and_mode():
    # auto: bf16 where the GPU has it, else fp16; off on CPUs
    assert autocast_dtype(True, "auto", CUDA, yes) is torch.bfloat16
    assert autocast_dtype(True, "auto", CUDA, no) is torch.float16
    assert autocast_dtype(True, "auto", CPU) is None
    assert autocast_dtype(False, "bf16", CUDA, yes) is None  # --amp off wins
    assert autocast_dtype(True, "fp16", CUDA, yes) is torch.float16
    assert autocast_dtype(True, "bf16", CUDA, yes) is torch.bfloat16
    with pytest.raises(AttnlabError, match="no bfloat16 support; use --amp fp16"):
        autocast_dtype(True, "bf16", CUDA, no)
    for mode in ("bf16", "fp16"):
        with pytest.raises(AttnlabError, match=f"--amp {mode} needs a CUDA device"):
            autocast_dtype(True, mode, CPU)


def test_loss_scaling_and_fused_adamw_only_where_they_belong():
    assert not grad_scaler(CPU, None).is_enabled()
    assert fused_adamw(CUDA) and not fused_adamw(CPU)
    model = torch.nn.Linear(3, 2)
    cfg = TrainConfig(model="m")
    assert build_optimizer(model, cfg).defaults["fused"] is None  # CPU: torch's default, as before
    assert build_optimizer(model, cfg, fused=False).defaults["fused"] is None


def test_compiled_run_saves_plain_weights(tmp_path, monkeypatch):
    """--compile runs the compiled module and saves the plain one: no ``_orig_mod.`` keys, same numbers
    (a recording backend that runs the captured graph as it is checks the wiring without a C++
    compiler; on GPUs it is inductor)."""
    graphs = []

    def recording_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    monkeypatch.setattr(accel, "COMPILE_BACKEND", recording_backend)
    data = write_fashion_mnist_idx(tmp_path / "fm", n_train=32, n_test=16)
    base = dict(model="vit_micro_patch4_32", data_dir=str(data), epochs=1, batch_size=16, threads=1,
                progress="off", save_every=0, augment=False, device="cpu")
    train(TrainConfig(**base, out=str(tmp_path / "plain")), log=None)
    lines = []
    train(TrainConfig(**base, out=str(tmp_path / "compiled"), compile=True), log=lines.append)
    assert graphs  # the training steps ran through torch.compile
    a = torch.load(tmp_path / "compiled" / "last.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "plain" / "last.pt", weights_only=True)["state_dict"]
    assert not [k for k in a if "_orig_mod" in k] and a.keys() == b.keys()
    state = torch.load(tmp_path / "compiled" / "resume.pt", weights_only=True)
    assert not [k for k in state["model"] if "_orig_mod" in k] and state["config"]["compile"] is True
    for k in a:
        assert torch.equal(a[k], b[k]), k
