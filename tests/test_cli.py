"""The command line: output, exit codes, one-line errors, lazy imports."""
import json
import os
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from attnlab import save_checkpoint
from attnlab.cli import app
from attnlab.models import ENTRIES, create_model

runner = CliRunner()


def _one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for f in fragments:
        assert f in lines[0]


def test_models_lists_every_family_and_size():
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0
    for name in ENTRIES:
        assert name in result.stdout
    line = next(l for l in result.stdout.splitlines() if l.startswith("revit_micro_patch4_32 "))
    with torch.device("meta"):
        n = sum(p.numel() for p in create_model("revit_micro_patch4_32").parameters())
    assert f"{n / 1e6:.2f}M" in line


def test_models_filters():
    result = runner.invoke(app, ["models", "*patch4_32", "--family", "vit_cb", "--no-params"])
    assert result.exit_code == 0
    names = [l.split()[0] for l in result.stdout.splitlines()[1:] if l.endswith("-")]
    assert names == ["vit_cb_micro_patch4_32", "vit_cb_tiny_patch4_32", "vit_cb_small_patch4_32"]
    _one_line_error(runner.invoke(app, ["models", "--family", "swin"]), "unknown family 'swin'")
    _one_line_error(runner.invoke(app, ["models", "convnext*"]), "no model matches", "--all")
    _one_line_error(runner.invoke(app, ["models", "--all", "--family", "revit"]), "drop --family or --all")


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_models_param_counts_are_those_of_the_built_models(name):
    with torch.device("meta"):
        n = sum(p.numel() for p in create_model(name).parameters())
    assert ENTRIES[name].num_params == n


def test_models_lists_from_the_zoo_data_without_torch_or_timm():
    code = ("import sys; from typer.testing import CliRunner; from attnlab.cli import app; "
            "r = CliRunner().invoke(app, ['models']); assert r.exit_code == 0, r.output; "
            "print(sorted(m for m in ('torch', 'timm') if m in sys.modules))")
    proc = _python(code)
    assert proc.stdout.strip() == "[]", proc.stderr


def test_models_all_adds_timm_names_only_when_asked():
    result = runner.invoke(app, ["models", "convnext_at*", "--all"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("timm's other models matching 'convnext_at*'") and "convnext_atto" in lines[1:]
    result = runner.invoke(app, ["models", "vit_*_patch16_224", "--all"])
    assert "vit_micro_patch4_32" not in result.stdout and "vit_tiny_patch16_224  " in result.stdout
    timm_names = result.stdout.split("timm's other models", 1)[1].splitlines()[1:]
    assert "vit_large_patch16_224" in timm_names and "vit_tiny_patch16_224" not in timm_names


@pytest.fixture
def ckpt(tmp_path):
    model = create_model("revit_micro_patch4_32", in_chans=1)
    return save_checkpoint(model, tmp_path / "revit.pt", classes=[f"c{i}" for i in range(10)],
                           provenance={"dataset": "fashion-mnist", "epochs": 2, "seed": 3})


def test_info_text(ckpt):
    result = runner.invoke(app, ["info", "--ckpt", str(ckpt)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "revit_micro_patch4_32 (family revit)" in out
    assert "807,051" in out
    assert "1 x 32 x 32" in out and "8x8 patch grid" in out
    assert "alpha (a)     0.5 (learnable, shared)" in out
    assert "10: c0, c1" in out
    prov = out.split("\nprovenance\n", 1)[1].splitlines()
    assert "  dataset: fashion-mnist" in prov and "  epochs: 2" in prov and "  seed: 3" in prov
    assert all(line.startswith("  ") and ": " in line for line in prov)


def test_info_provenance_is_an_indented_list_and_json_numbers_stay_numbers(tmp_path):
    model = create_model("revit_micro_patch4_32", in_chans=1)
    # what training wrote before: a as text, one value per layer joined by ';'
    path = save_checkpoint(model, tmp_path / "r.pt", provenance={
        "dataset": "fashion-mnist", "metrics": {"top1": 85.11, "alpha": "0.353001", "lr": 1e-05},
        "config": {"clip_grad": 1.0, "data_dir": None}})
    out = runner.invoke(app, ["info", "--ckpt", str(path)]).stdout
    prov = out.split("\nprovenance\n", 1)[1].splitlines()
    assert "  metrics:" in prov and "    top1: 85.11" in prov and "    alpha: 0.353001" in prov
    assert "    lr: 1e-05" in prov and "    clip_grad: 1.0" in prov and "    data_dir: (none)" in prov
    assert not any("{" in line for line in prov)
    data = json.loads(runner.invoke(app, ["info", "--ckpt", str(path), "--json"]).stdout)
    assert data["alpha"] == 0.5 and data["provenance"]["metrics"]["alpha"] == 0.353001
    path = save_checkpoint(model, tmp_path / "r.pt", provenance={"metrics": {"alpha": "0.5;0.25"}})
    data = json.loads(runner.invoke(app, ["info", "--ckpt", str(path), "--json"]).stdout)
    assert data["provenance"]["metrics"]["alpha"] == [0.5, 0.25]
    empty = runner.invoke(app, ["info", "--ckpt", str(save_checkpoint(model, tmp_path / "e.pt"))]).stdout
    assert "\nprovenance\n  attnlab_version: " in empty


def test_info_json(ckpt):
    result = runner.invoke(app, ["info", "--ckpt", str(ckpt), "--json"])
    data = json.loads(result.stdout)
    assert data["num_params"] == 807051 and data["family"] == "revit" and data["grid"] == [8, 8]
    assert data["input"]["channels"] == 1 and data["provenance"]["seed"] == 3
    assert len(data["sha256"]) == 12


def test_info_plain_state_dict_with_model(tmp_path):
    torch.save(create_model("vit_cb_micro_patch4_32").state_dict(), tmp_path / "w.pth")
    result = runner.invoke(app, ["info", "--ckpt", str(tmp_path / "w.pth"), "--model", "vit_cb_micro_patch4_32"])
    assert result.exit_code == 0 and "(family vit_cb)" in result.stdout and "state_dict" in result.stdout


def test_info_bad_inputs_are_one_line_exit_2(tmp_path, ckpt):
    _one_line_error(runner.invoke(app, ["info", "--ckpt", str(tmp_path / "missing.pt")]), "checkpoint not found")
    (tmp_path / "trunc.pt").write_bytes(ckpt.read_bytes()[:1000])
    _one_line_error(runner.invoke(app, ["info", "--ckpt", str(tmp_path / "trunc.pt")]), "truncated or corrupt")
    torch.save(create_model("vit_micro_patch4_32").state_dict(), tmp_path / "vit.pth")
    _one_line_error(runner.invoke(app, ["info", "--ckpt", str(tmp_path / "vit.pth"), "--model", "revit_micro_patch4_32"]),
                    "do not fit revit_micro_patch4_32", "missing (first: alpha)")
    _one_line_error(runner.invoke(app, ["info", "--ckpt", "revit_micro_patch4_23"]), "unknown model name",
                    "revit_micro_patch4_32")
    _one_line_error(runner.invoke(app, ["info", "--ckpt", str(tmp_path / "vit.pth")]), "--model")


def _python(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, **env))


def test_cli_and_package_import_without_torch():
    proc = _python("import sys, attnlab, attnlab.cli; print(sorted(m for m in ('torch', 'timm') if m in sys.modules))")
    assert proc.stdout.strip() == "[]", proc.stderr


@pytest.mark.parametrize("order", ["import attnlab, timm", "import timm, attnlab",
                                   "import attnlab.models.broadcast, timm", "import attnlab.models.residual, timm"])
def test_import_attnlab_registers_families_with_timm(order):
    proc = _python(f"{order}; m = timm.create_model('revit_cb_micro_patch4_32'); print(type(m).__name__, "
                   "timm.is_model('vit_cb_tiny_patch16_224'))")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ResidualVisionTransformer", "True"]


def test_python_dash_m_works():
    proc = subprocess.run([sys.executable, "-m", "attnlab", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "models" in proc.stdout and "info" in proc.stdout


def test_figures_runs_each_analysis_script_and_reports_failures(tmp_path):
    scripts = tmp_path / "analyses"
    scripts.mkdir()
    (scripts / "01_ok.py").write_text("import sys, pathlib\npathlib.Path('ran_01').write_text(' '.join(sys.argv[1:]))\n")
    (scripts / "02_fails.py").write_text("raise SystemExit(3)\n")
    (scripts / "helper.py").write_text("raise SystemExit('not an analysis')\n")
    result = runner.invoke(app, ["figures", "--analyses", str(scripts), "--only", "1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "ran_01").read_text() == "--dataset fashion-mnist"
    result = runner.invoke(app, ["figures", "--analyses", str(scripts)])
    assert result.exit_code == 2 and "1 analysis script(s) failed: 02_fails.py" in result.stderr
    result = runner.invoke(app, ["figures", "--analyses", str(scripts), "--only", "07"])
    assert result.exit_code == 2 and "no analysis script numbered 07" in result.stderr
