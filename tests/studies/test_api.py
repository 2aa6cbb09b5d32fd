"""The Python API as a notebook uses it: in-memory models, one result type, no global side effects."""
import os
import re
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import attnlab
from attnlab.errors import AttnlabError
from attnlab.spec import InputSpec
from attnlab.studies.inputs import ImageSelection, group_by_input, load_models
from attnlab.tables import COLUMNS

REPO = Path(__file__).resolve().parents[2]
SPEC = InputSpec(size=(32, 32), channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(1)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / f"img{i}.png")
    return d


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return {"ViT": attnlab.create_model("vit_micro_patch4_32"), "ReViT": attnlab.create_model("revit_micro_patch4_32")}


def test_dir_lists_the_api_only():
    names = dir(attnlab)
    for name in ["load_model", "capture_attention", "run_with_cache", "measure_attention", "measure_robustness",
                 "explain", "load_dataset", "train", "evaluate", "metrics"]:
        assert name in names
    assert not {"Any", "annotations", "importlib", "_registration"} & set(names)
    assert callable(attnlab.evaluate) and hasattr(attnlab.metrics, "mean_attention_distance")


def test_import_is_lazy():
    code = "import sys, attnlab; print(sorted(m for m in ('torch', 'timm', 'matplotlib', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_measure_attention_on_bare_modules_and_pairs(nets, images, tmp_path):
    spec_model = (nets["ReViT"], load_models(nets["ReViT"], input_spec=SPEC)[0].spec)
    result = attnlab.measure_attention([nets["ViT"], spec_model], ["ViT", "ReViT"], images=[images],
                                       input_spec=SPEC, batch_size=4)
    assert tuple(result.frame.columns) == COLUMNS
    assert set(result.frame["model"]) == {"ViT", "ReViT"} and result.n_images == 6
    figs = result.figures()
    assert set(figs) == {"mad_per_layer", "mad_per_head", "globality_curves", "entropy_per_layer", "entropy_heatmap"}
    assert all(isinstance(f, matplotlib.figure.Figure) for f in figs.values())
    written = result.save(tmp_path / "out")
    assert {p.name for p in written} == {"globality.csv", "entropy.csv"} | {f"{s}.{e}" for s in figs for e in ("png", "pdf")}
    back = pd.read_csv(tmp_path / "out" / "globality.csv")
    assert set(back["metric"]) <= {"mad_px", "mad_px_raw", "nonlocality", "globality", "prefix_mass"}


def test_a_bare_module_without_a_timm_config_needs_an_input_spec():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3, 2))
    with pytest.raises(AttnlabError, match="input_spec"):
        load_models(net)


def test_a_bad_source_is_one_line():
    with pytest.raises(AttnlabError, match="model source is a checkpoint path"):
        load_models([3.5])


def test_models_sharing_an_input_decode_each_image_once(nets, images, monkeypatch):
    from attnlab.data.base import FileDataset

    calls = []
    original = FileDataset.load_image
    monkeypatch.setattr(FileDataset, "load_image", lambda self, i: calls.append(i) or original(self, i))
    loaded = load_models([nets["ViT"], nets["ReViT"]], input_spec=SPEC)
    assert len(group_by_input(loaded)) == 1
    attnlab.measure_attention(loaded, images=[images], batch_size=4, metrics=["mad_px"])
    assert len(calls) == 6


def test_image_selection_is_checked_once_before_models_load(tmp_path):
    with pytest.raises(AttnlabError, match="not both or neither"):
        ImageSelection()
    with pytest.raises(AttnlabError, match="--num-images must be at least 1"):
        ImageSelection(images=[tmp_path], num_images=0)
    with pytest.raises(AttnlabError, match="not both or neither"):  # before the missing checkpoint is noticed
        attnlab.measure_attention(["missing.pt"])


def test_selection_notes_say_how_many_of_how_many(images):
    sel = ImageSelection(images=[images], default_limit=4)
    assert len(sel.open(SPEC)) == 4
    assert any("using 4 of the 6 images" in n for n in sel.notes(SPEC, "ViT"))
    assert [Path(n).name for n in sel.names(3)] == [f"img{i}.png" for i in range(4)]


def test_a_selection_checks_only_the_files_it_takes(images, tmp_path, monkeypatch):
    """A study of 4 images from a large folder must not open every file of the split up front."""
    import shutil

    import attnlab.data.base as base

    for cls in ("ant", "bee"):
        (tmp_path / "test" / cls).mkdir(parents=True)
        for k in range(3):
            shutil.copy(images / f"img{k}.png", tmp_path / "test" / cls / f"{k}.png")
    (tmp_path / "test" / "bee" / "9.png").write_bytes(b"not a png")  # sorts last in its class: never reached
    probed = []
    real = base.probe_image
    monkeypatch.setattr(base, "probe_image", lambda path, full=True: probed.append(path) or real(path, full))
    sel = ImageSelection(dataset="imagefolder", data_dir=tmp_path, default_limit=4)
    assert len(sel.open(SPEC)) == 4 and len(probed) <= 4 + 1
    assert any("using 4 of the 7 images" in n for n in sel.notes(SPEC, "ViT"))
    assert not any("unreadable" in n for n in sel.notes(SPEC, "ViT"))
    # more than there are: every file read once more, the corrupt one reported, and a clear error
    with pytest.raises(AttnlabError, match="--num-images 7 is more than the 6 images available"):
        ImageSelection(dataset="imagefolder", data_dir=tmp_path, num_images=7).open(SPEC)
    everything = ImageSelection(dataset="imagefolder", data_dir=tmp_path, default_limit=10)
    assert len(everything.open(SPEC)) == 6
    assert any("skipped 1 unreadable" in n for n in everything.notes(SPEC, "ViT"))


def test_figures_leave_matplotlib_global_state_alone(nets, images):
    import matplotlib.pyplot as plt

    before = dict(matplotlib.rcParams)
    backend = matplotlib.get_backend()
    result = attnlab.measure_attention([nets["ViT"]], images=[images], input_spec=SPEC, metrics=["entropy_norm",
                                                                                                 "entropy"])
    for fig in result.figures().values():
        plt.close(fig)
    after = dict(matplotlib.rcParams)
    changed = {k for k in before if before[k] != after.get(k) and k != "backend"}
    assert not changed, sorted(changed)[:5]
    assert matplotlib.get_backend() == backend


def test_importing_plots_does_not_set_the_backend():
    code = ("import matplotlib; matplotlib.use('svg'); import attnlab.plots.attention, attnlab.plots.style; "
            "print(matplotlib.get_backend())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "svg"


def test_readme_python_example_runs(tmp_path):
    """The README's notebook-style example, run as written (committed checkpoints, real Fashion-MNIST)."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    from attnlab.data.fashion_mnist import load_fashion_mnist

    try:
        load_fashion_mnist(split="test", subset=1)
    except AttnlabError:
        if os.environ.get("ATTNLAB_STRICT_TESTS") == "1":  # `make test` installs it first: missing is a failure
            pytest.fail("Fashion-MNIST is not installed, though `make test` installs it (make data)")
        pytest.skip("Fashion-MNIST is not installed (make data)")
    (tmp_path / "checkpoints").symlink_to(REPO / "checkpoints")
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"MPLBACKEND": "Agg", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "out/api/attention/globality.csv").exists()
    assert (tmp_path / "out/api/gradcam/gradcam_maps.npz").exists()


def test_train_and_evaluate_from_the_top_level(tmp_path):
    from attnlab.train.synthetic import write_fashion_mnist_idx

    data = write_fashion_mnist_idx(tmp_path / "fm", n_train=32, n_test=16)
    config = attnlab.TrainConfig(model="vit_micro_patch4_32", dataset="fashion-mnist", data_dir=str(data),
                                 epochs=1, batch_size=16, out=str(tmp_path / "run"), device="cpu")
    result = attnlab.train(config)
    assert (tmp_path / "run" / "best.pt").exists()
    evaluated, spec = attnlab.evaluate(tmp_path / "run" / "best.pt", "fashion-mnist", data_dir=data)
    assert spec.arch == "vit_micro_patch4_32" and evaluated.n == 16 and 0.0 <= evaluated.top1 <= 100.0
    assert result is not None
