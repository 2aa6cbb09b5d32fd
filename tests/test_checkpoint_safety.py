"""Files torch cannot read safely: refused or explained in one line, never run, never warned about."""
import gzip
import os
import pickle
import subprocess
import sys
import zipfile

import pytest
import torch

from attnlab import CheckpointError, load_model, read_checkpoint, save_checkpoint
from attnlab.models import create_model


class _RunsCode:
    """A pickle payload that would run a shell command when unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Plain:
    """Any class instance: unpickling it imports and builds an object."""

    def __init__(self):
        self.weights = [0.0, 1.0]


WRITERS = {
    "pickle-2": lambda obj, path: path.write_bytes(pickle.dumps(obj, protocol=2)),
    "pickle-4": lambda obj, path: path.write_bytes(pickle.dumps(obj, protocol=4)),
    "torch-zip": lambda obj, path: torch.save(obj, path),
    "torch-zip-4": lambda obj, path: torch.save(obj, path, pickle_protocol=4),
    "torch-legacy": lambda obj, path: torch.save(obj, path, _use_new_zipfile_serialization=False),
}


def _assert_one_line(message, *fragments):
    assert "\n" not in message and len(message) < 400, message
    assert "weights_only=False" not in message and "weights_only` set to `False" not in message
    for f in fragments:
        assert f in message, message


@pytest.mark.parametrize("suffix", [".pt", ".pth"])
@pytest.mark.parametrize("writer", sorted(WRITERS))
@pytest.mark.parametrize("payload", ["code", "instance"])
def test_pickles_that_build_objects_are_refused_without_warnings(tmp_path, recwarn, suffix, writer, payload):
    marker = tmp_path / "ran"
    obj = _RunsCode(marker) if payload == "code" else _Plain()
    path = tmp_path / f"evil{suffix}"
    WRITERS[writer]({"state_dict": {"w": [0.0]}, "x": obj}, path)
    with pytest.raises(CheckpointError) as info:
        load_model(path, model="vit_micro_patch4_32")
    message = str(info.value)
    assert message.startswith(f"refused to load {path}: it contains pickled Python objects ("), message
    assert ("system)" if payload == "code" else "_Plain)") in message
    _assert_one_line(message, "that could run code", "torch.save(model.state_dict(), ...)")
    assert not marker.exists()
    assert [str(w.message) for w in recwarn] == []


def test_the_command_line_prints_one_line_for_a_protocol_4_pickle(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"x": _RunsCode(marker)}, protocol=4))
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import test_checkpoint_safety; "
            "from attnlab.cli import main; sys.argv = ['attnlab', 'info', '--ckpt', sys.argv[2]]; main()")
    proc = subprocess.run([sys.executable, "-c", code, os.path.dirname(__file__), str(path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and "refused to load" in proc.stderr, proc.stderr
    assert "Warning" not in proc.stderr and not marker.exists()


@pytest.mark.parametrize("writer", ["pickle-4", "torch-zip-4"])
def test_safe_data_at_protocol_4_says_to_resave(tmp_path, recwarn, writer):
    path = tmp_path / "w.pt"
    WRITERS[writer]({"a": 1, "b": [1.0, "x"]} if writer == "pickle-4" else {"w": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    _assert_one_line(str(info.value), f"cannot read {path}: it was pickled with protocol 4", "torch.save")
    assert "could run code" not in str(info.value)
    assert len(recwarn) == 0


def test_a_plain_protocol_2_pickle_of_data_is_named(tmp_path):
    path = tmp_path / "p.pt"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(CheckpointError, match=r"it is a plain pickle \(pickle.dump\), not a torch.save file"):
        read_checkpoint(path)


@pytest.mark.parametrize("content, looks", [
    (b"hello world\nthis is text\n", "a text file (it starts with 'hello world this is text')"),
    (b"<!DOCTYPE html><html><body>404</body></html>", "an HTML page (a failed download?)"),
    (b"epochs: 3\nlr: 0.1\n", "a text file"),
])
def test_a_text_file_is_called_a_text_file(tmp_path, content, looks):
    path = tmp_path / "weights.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"{path} is not a checkpoint: it looks like {looks}"), message
    _assert_one_line(message, ".pt", ".safetensors")
    assert "(101)" not in message and "corrupt" not in message


def test_other_formats_are_named(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "st.pt")
    with pytest.raises(CheckpointError, match="looks like a safetensors file: rename it to .safetensors"):
        read_checkpoint(tmp_path / "st.pt")
    torch.save({"w": torch.zeros(2)}, tmp_path / "pt.safetensors")
    with pytest.raises(CheckpointError, match="it is a torch.save file; rename it to .pt"):
        read_checkpoint(tmp_path / "pt.safetensors")
    with zipfile.ZipFile(tmp_path / "z.pt", "w") as z:
        z.writestr("notes.txt", "hi")
    with pytest.raises(CheckpointError, match="is not a checkpoint: it is a zip archive without the data.pkl"):
        read_checkpoint(tmp_path / "z.pt")
    (tmp_path / "g.pt").write_bytes(gzip.compress(b"x" * 100))
    with pytest.raises(CheckpointError, match="looks like a gzip file: unpack it first"):
        read_checkpoint(tmp_path / "g.pt")


@pytest.fixture
def good_bytes(tmp_path):
    return save_checkpoint(create_model("vit_micro_patch4_32"), tmp_path / "good.pt").read_bytes()


@pytest.mark.parametrize("cut", [1000, 0.5, 0.99])
def test_a_truncated_zip_gets_a_complete_sentence_that_ends_with_what_to_do(tmp_path, good_bytes, cut):
    path = tmp_path / "trunc.pt"
    path.write_bytes(good_bytes[: int(cut if cut > 1 else len(good_bytes) * cut)])
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert str(info.value) == (f"cannot read {path}: the file is truncated or corrupt (it starts as a zip "
                               "archive, the torch.save format, but its end is missing or damaged); copy or download it "
                               "again, or re-save it with torch.save")


def test_truncated_legacy_files_and_random_bytes_end_with_what_to_do(tmp_path, recwarn):
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.zeros(1000)}, legacy, _use_new_zipfile_serialization=False)
    data = legacy.read_bytes()
    for name, content in [("half.pt", data[: len(data) // 2]), ("start.pt", data[:100]),
                          ("random.pt", os.urandom(4096))]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(CheckpointError) as info:
            read_checkpoint(tmp_path / name)
        message = str(info.value)
        assert message.startswith(f"cannot read {tmp_path / name}: the file is truncated or corrupt ("), message
        assert message.endswith("); copy or download it again, or re-save it with torch.save"), message
        _assert_one_line(message)
    assert len(recwarn) == 0


@pytest.mark.parametrize("legacy", [False, True])
def test_damaged_files_always_get_one_line(tmp_path, recwarn, legacy):
    import random

    rng = random.Random(0)
    path = tmp_path / "src.pt"
    torch.save({"w": torch.zeros(50), "n": 3}, path, _use_new_zipfile_serialization=not legacy)
    good = path.read_bytes()
    for i in range(60):
        data = bytearray(good)
        if i % 2:
            data = data[: rng.randrange(1, len(data))]
        else:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        path.write_bytes(bytes(data))
        try:
            read_checkpoint(path)
        except CheckpointError as e:
            _assert_one_line(str(e))
    assert len(recwarn) == 0


def test_a_torch_archive_missing_its_tensor_data_is_corrupt_not_a_plain_pickle(tmp_path):
    torch.save({"w": torch.zeros(4)}, tmp_path / "src.pt")
    with zipfile.ZipFile(tmp_path / "src.pt") as src, zipfile.ZipFile(tmp_path / "cut.pt", "w") as dst:
        for item in src.infolist():
            if not item.filename.endswith("/data/0"):
                dst.writestr(item, src.read(item))
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(tmp_path / "cut.pt")
    message = str(info.value)
    assert message.startswith(f"cannot read {tmp_path / 'cut.pt'}: the file is truncated or corrupt (")
    assert "data/0" in message and message.endswith("re-save it with torch.save")
