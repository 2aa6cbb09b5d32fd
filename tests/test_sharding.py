"""Several processes (torchrun, gloo on CPU): each rank measures its share of the images and the
merged outputs equal one process's; rank 0 alone prints and writes; one rank failing stops all."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from attnlab import save_checkpoint
from attnlab.cli import app
from attnlab.models import create_model
from attnlab.spec import InputSpec
from attnlab.studies.robustness import RobustnessRun
from attnlab.studies.robustness.conditions import conditions_for
from attnlab.studies.sharding import World

SPEC = InputSpec(size=(32, 32), channels=3, mean=(0.5,) * 3, std=(0.25,) * 3)
CLASSES = ["a", "b", "c"]
N_IMAGES = 7  # odd: the ranks' shares differ


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharding")
    torch.manual_seed(0)
    ckpt = save_checkpoint(create_model("vit_micro_patch4_32", num_classes=3), root / "vit.pt", input_spec=SPEC,
                           classes=CLASSES)
    # windowed attention: measured on each layer's geometry (GeometricStats), merged as sums
    swin = save_checkpoint(create_model("reswin_micro_patch2_window4_32", num_classes=3), root / "swin.pt",
                           input_spec=SPEC, classes=CLASSES)
    rng = np.random.default_rng(0)
    for i in range(N_IMAGES):
        folder = root / "data" / "test" / CLASSES[i % 3]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root, str(ckpt), str(swin)


def _args(setup, command, out, *extra, swin=False):
    root, ckpt, windowed = setup
    models = ["--ckpt", ckpt] + (["--ckpt", windowed] if swin else [])
    return [command, *models, "--dataset", "imagefolder", "--data-dir", str(root / "data"), "--device", "cpu",
            "--out", str(out), *extra]


def _one_process(args):
    r = CliRunner().invoke(app, [*args, "--workers", "0"])
    assert r.exit_code == 0, r.output
    return r


def _torchrun(*argv, timeout=240):
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           *argv], capture_output=True, text=True, timeout=timeout, env=env)


def _same_csv(a, b):
    left, right = pd.read_csv(a), pd.read_csv(b)
    assert list(left.columns) == list(right.columns) and len(left) == len(right) > 0
    numbers = left.select_dtypes("number").columns
    pd.testing.assert_frame_equal(left.drop(columns=numbers), right.drop(columns=numbers))
    np.testing.assert_allclose(left[numbers].to_numpy(float), right[numbers].to_numpy(float), rtol=0, atol=1e-9)
    return left


def test_each_rank_takes_a_contiguous_run_of_one_processs_batches():
    for n in range(0, 12):
        for batch_size in (1, 2, 3, 5):
            whole = World().batches(n, batch_size)
            for size in (2, 3, 4):
                shares = [World(rank, size).batches(n, batch_size) for rank in range(size)]
                assert [b for share in shares for b in share] == whole  # disjoint, in image order, none left out
                for rank, share in enumerate(shares):
                    before = World(rank, size).batches_before(n, batch_size)
                    assert share == whole[before:before + len(share)]


@pytest.mark.parametrize("protocol", ["revit-random", "consistency"])
def test_a_rank_that_starts_later_draws_the_random_views_of_one_process(protocol):
    torch.manual_seed(0)
    net = create_model("vit_micro_patch4_32").eval()
    g = torch.Generator().manual_seed(0)
    x, labels = torch.rand(7, 3, 32, 32, generator=g), torch.randint(0, 10, (7,), generator=g)
    conds = conditions_for(protocol, [4], [0.5], "h", "black", (32, 32))
    whole = RobustnessRun(net, SPEC, conds, protocol=protocol, seed=3)
    for s in range(0, 7, 3):
        whole.update(x[s:s + 3], labels[s:s + 3])
    later = RobustnessRun(net, SPEC, conds, protocol=protocol, seed=3)
    later.skip(1, 3)  # rank 1 of 2 starts at the second batch of 3
    later.update(x[3:6], labels[3:6])
    later.update(x[6:], labels[6:])
    for cond in conds:
        a, b = whole.outcomes()[cond], later.outcomes()[cond]
        np.testing.assert_array_equal(a.js[3:], b.js)
        np.testing.assert_array_equal(a.consistent[3:], b.consistent)
    fresh = RobustnessRun(net, SPEC, conds, protocol=protocol, seed=3)
    fresh.update(x[3:6], labels[3:6])
    assert not np.array_equal(fresh.outcomes()[conds[0]].js, whole.outcomes()[conds[0]].js[3:6])  # the skip matters


def test_globality_under_torchrun_equals_one_process(setup, tmp_path):
    one = tmp_path / "one"
    _one_process(_args(setup, "globality", one, "--batch-size", "2", swin=True))
    two = tmp_path / "two"
    r = _torchrun("-m", "attnlab", *_args(setup, "globality", two, "--batch-size", "2", "--workers", "1", swin=True))
    assert r.returncode == 0, r.stdout + r.stderr
    frame = _same_csv(one / "globality.csv", two / "globality.csv")
    assert (frame["n_images"] == N_IMAGES).all() and set(frame["model"]) == {"vit", "swin"}
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert r.stdout.count("wrote ") == 1 and r.stdout.count(f"{N_IMAGES} images") == 1  # rank 0 alone prints


DRIVER = textwrap.dedent('''
    """Run attnlab commands one after the other in each torchrun process; record exit codes and writes."""
    import json, os, sys
    from contextlib import contextmanager

    import attnlab.outputs
    from attnlab.cli import main
    from attnlab.data.base import FileDataset
    from attnlab.errors import AttnlabError

    rank = int(os.environ["RANK"])
    staged, codes = [], []
    original = attnlab.outputs.staged_outputs

    @contextmanager
    def spying(out, *args, **kwargs):  # every write goes through staged_outputs: note who writes
        staged.append(str(out))
        with original(out, *args, **kwargs) as stage:
            yield stage

    attnlab.outputs.staged_outputs = spying
    for argv in json.loads(sys.argv[2]):
        if argv[0] == "--fail-on-rank-1":
            argv = argv[1:]
            if rank == 1:  # this rank's disk goes away: every image it reads fails
                def unreadable(self, i):
                    raise AttnlabError(f"cannot decode {self.paths[i]} (disk gone)")
                FileDataset.load_image = unreadable
        try:
            main(argv)
        except SystemExit as e:
            codes.append(e.code)
    with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as f:
        json.dump({"codes": codes, "staged": staged}, f)
''')


def test_entropy_robustness_evaluate_and_a_failing_rank_under_torchrun(setup, tmp_path):
    runs = {  # entropy in one batch of 8: rank 1 has no image at all
        "entropy": ["--batch-size", "8"],
        "robustness": ["--batch-size", "3", "--protocol", "revit-random", "--shifts", "0,4", "--scales", "0.75",
                       "--attention"],
        "evaluate": ["--batch-size", "2"],
    }
    one, two = tmp_path / "one", tmp_path / "two"
    for command, extra in runs.items():
        _one_process(_args(setup, command, one / command, *extra, swin=command == "entropy"))
    argv = [_args(setup, command, two / command, *extra, "--workers", "1", swin=command == "entropy")
            for command, extra in runs.items()]
    argv.append(_args(setup, "gradcam", two / "gradcam", "--no-metrics"))  # refuses: per-image outputs
    argv.append(["--fail-on-rank-1", *_args(setup, "globality", two / "failed", "--batch-size", "2")])
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    r = _torchrun(str(driver), str(tmp_path), json.dumps(argv))
    assert r.returncode == 0, r.stdout + r.stderr
    for name in ("entropy/entropy.csv", "robustness/robustness.csv", "evaluate/per_class_accuracy.csv"):
        frame = _same_csv(one / name, two / name)
        if "n_images" in frame:
            assert frame["n_images"].max() == N_IMAGES
    assert set(pd.read_csv(two / "entropy/entropy.csv")["model"]) == {"vit", "swin"}
    assert pd.read_csv(two / "evaluate/per_class_accuracy.csv")["n"].sum() == N_IMAGES
    assert r.stdout.count("top-1 ") == 1
    ranks = [json.loads((tmp_path / f"rank{k}.json").read_text()) for k in (0, 1)]
    assert [rank["codes"] for rank in ranks] == [[0, 0, 0, 2, 2]] * 2  # a failure stops both ranks, non-zero
    assert len(ranks[0]["staged"]) == 3 and ranks[1]["staged"] == []  # rank 0 alone writes
    assert not (two / "failed").exists() and not (two / "gradcam").exists()
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]  # each printed once
    assert len(errors) == 2, r.stderr
    assert "gradcam runs in one process, not under torchrun" in errors[0] and "rank" not in errors[0]
    assert "rank 1 of 2: cannot decode" in errors[1] and "(disk gone)" in errors[1]
