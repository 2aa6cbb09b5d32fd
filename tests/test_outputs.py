"""All-or-nothing output folders (attnlab.outputs.staged_outputs)."""
import os

import pytest

from attnlab.errors import AttnlabError

from attnlab.outputs import staged_outputs


def listing(folder):
    """Every path under ``folder`` (hidden ones included), relative, sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def fill(stage, names):
    for name in names:
        (stage / name).parent.mkdir(parents=True, exist_ok=True)
        (stage / name).write_text(f"new {name}\n")


def test_success_moves_everything_and_leaves_no_staging(tmp_path):
    out = tmp_path / "results"
    with staged_outputs(out) as stage:
        assert stage.parent == tmp_path and stage.name.startswith(".results.staging-")
        assert not out.exists()  # nothing visible while the run is under way
        fill(stage, ["a.csv", "b.png", "sub/c.npz"])
    assert listing(tmp_path) == ["results", "results/a.csv", "results/b.png", "results/sub", "results/sub/c.npz"]
    assert (out / "sub" / "c.npz").read_text() == "new sub/c.npz\n"


def test_success_replaces_files_of_the_same_name(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "a.csv").write_text("old\n")
    with staged_outputs(out) as stage:
        fill(stage, ["a.csv"])
    assert (out / "a.csv").read_text() == "new a.csv\n"
    assert listing(tmp_path) == ["results", "results/a.csv"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt, SystemExit])
def test_error_in_the_block_leaves_no_trace_in_a_new_folder(tmp_path, error):
    out = tmp_path / "results"
    with pytest.raises(error):
        with staged_outputs(out, owned=["*.png"]) as stage:
            fill(stage, ["a.csv", "sub/b.png"])
            (stage / "half.png").write_bytes(b"\x89PN")  # a figure half written
            raise error("stop")
    assert listing(tmp_path) == []  # no output folder, no hidden staging folder


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_error_in_the_block_keeps_an_earlier_run(tmp_path, error):
    out = tmp_path / "results"
    out.mkdir()
    (out / "a.csv").write_text("old\n")
    (out / "robustness_shift.png").write_text("old figure\n")  # owned, but this run failed
    before = listing(tmp_path)
    with pytest.raises(error):
        with staged_outputs(out, owned=["robustness_*.png"]) as stage:
            fill(stage, ["a.csv", "robustness_scale.png"])
            raise error("stop")
    assert listing(tmp_path) == before
    assert (out / "a.csv").read_text() == "old\n"
    assert (out / "robustness_shift.png").read_text() == "old figure\n"


def test_owned_patterns_remove_stale_files_only(tmp_path):
    out = tmp_path / "results"
    (out / "nested").mkdir(parents=True)
    for name in ["robustness.csv", "robustness_shift.png", "robustness_shift.pdf", "robustness_scale.png",
                 "notes.txt", "gradcam.png", "nested/robustness_old.png"]:
        (out / name).write_text("old\n")
    with staged_outputs(out, owned=["robustness.csv", "robustness_*.png", "robustness_*.pdf"]) as stage:
        fill(stage, ["robustness.csv", "robustness_scale.png"])
    assert listing(out) == ["gradcam.png", "nested", "nested/robustness_old.png", "notes.txt", "robustness.csv",
                            "robustness_scale.png"]
    assert (out / "robustness_scale.png").read_text() == "new robustness_scale.png\n"  # replaced, not removed
    assert (out / "notes.txt").read_text() == "old\n"
    assert (out / "gradcam.png").read_text() == "old\n"  # not owned by this kind of run
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]


def test_without_owned_patterns_nothing_is_removed(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "robustness_shift.png").write_text("old\n")
    with staged_outputs(out) as stage:
        fill(stage, ["robustness_scale.png"])
    assert listing(out) == ["robustness_scale.png", "robustness_shift.png"]


def test_parent_folders_are_made(tmp_path):
    out = tmp_path / "a" / "b" / "results"
    with staged_outputs(out) as stage:
        fill(stage, ["x.csv"])
    assert (out / "x.csv").is_file()
    assert listing(tmp_path / "a" / "b") == ["results", "results/x.csv"]


def test_out_dir_that_is_a_file_leaves_no_staging(tmp_path):
    out = tmp_path / "results"
    out.write_text("not a folder\n")
    with pytest.raises(AttnlabError, match="is a file, not a folder"):
        with staged_outputs(out) as stage:
            fill(stage, ["a.csv"])
    assert listing(tmp_path) == ["results"]
