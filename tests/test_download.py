"""`attnlab download` and the data errors that point to it (no network: the loader is replaced)."""
import pytest
from typer.testing import CliRunner

import attnlab.data
from attnlab.cli import app
from attnlab.data import load_dataset
from attnlab.errors import AttnlabError

runner = CliRunner()


def test_download_asks_every_split_with_download_true(monkeypatch, tmp_path):
    calls = []

    class Fake:
        def summary(self):
            return "fake"

    monkeypatch.setattr(attnlab.data, "load_dataset", lambda name, **kw: calls.append((name, kw)) or Fake())
    r = runner.invoke(app, ["download", "CIFAR-10", "--data-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert [(n, kw["split"], kw["download"]) for n, kw in calls] == [("cifar10", "train", True), ("cifar10", "test", True)]


def test_download_of_a_folder_layout_is_one_line():
    r = runner.invoke(app, ["download", "imagefolder"])
    assert r.exit_code == 2 and "nothing to download" in r.stderr


@pytest.mark.parametrize("name", ["cifar10", "pets", "flowers102"])
def test_missing_data_points_to_the_command(tmp_path, name):
    with pytest.raises(AttnlabError, match=f"attnlab download {name}"):
        load_dataset(name, "test", data_dir=tmp_path / "none")
