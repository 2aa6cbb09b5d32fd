"""DataLoader worker plumbing: a worker's error as its one line, workers stopped, the default count."""
import pytest
import torch

from attnlab.data.workers import default_workers, drain
from attnlab.errors import AttnlabError


class Failing(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        if i == 5:
            raise AttnlabError("image 5: cannot decode (truncated JPEG)")
        return torch.tensor([i])


def test_a_worker_error_comes_back_as_its_one_line():
    loader = torch.utils.data.DataLoader(Failing(), batch_size=2, num_workers=2)
    seen = []
    with pytest.raises(AttnlabError) as err:
        for x in drain(loader):
            seen.append(x)
    assert str(err.value) == "image 5: cannot decode (truncated JPEG)"
    assert [int(v) for b in seen for v in b] == [0, 1, 2, 3]


def test_the_batches_are_the_loaders_and_the_workers_stop_with_the_loop():
    loader = torch.utils.data.DataLoader(list(range(6)), batch_size=4, num_workers=2)
    gen = drain(loader)
    first = next(gen)
    it = gen.gi_frame.f_locals["it"]
    assert first.tolist() == [0, 1, 2, 3] and not it._shutdown
    gen.close()                                    # the caller stops early: the workers go now
    assert it._shutdown


def test_default_workers_share_the_cores_between_local_processes(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_workers() == 8
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert default_workers() == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "32")
    assert default_workers() == 1
