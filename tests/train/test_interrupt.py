"""A training run stopped before its first save leaves no run folder behind."""
import pytest

from attnlab.train import TrainConfig, train
from attnlab.train.loop import Trainer
from attnlab.train.synthetic import write_fashion_mnist_idx


def test_interrupt_before_the_first_save_leaves_no_empty_folder(tmp_path, monkeypatch):
    data = write_fashion_mnist_idx(tmp_path / "fm", n_train=16, n_test=8)

    def stop(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_train_epoch", stop)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(model="vit_micro_patch4_32", dataset="fashion-mnist", data_dir=str(data), epochs=1,
                          batch_size=8, out=str(out), device="cpu"))
    assert not out.exists()
