"""Published weights without the network: one line, in seconds, no retries; the cache still works.

Nothing here contacts the network: sockets are blocked and the hub check is simulated.
"""
import logging
import socket
import time

import pytest
import torch

from attnlab import CheckpointError, load_model
from attnlab.models import factory

NAME = "vit_tiny_patch16_224"


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """Every connection attempt fails (and is recorded); the Hugging Face cache is empty."""
    from huggingface_hub import constants

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", lambda self, *a: refuse(*a))
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    return attempts


def _assert_offline_error(info, elapsed):
    message = str(info.value)
    assert elapsed < 5, f"took {elapsed:.1f} s"
    assert "\n" not in message
    assert message.startswith(f"could not load pretrained weights for {NAME}: ")
    assert "not in the local cache" in message and "--ckpt FILE" in message
    return message


def test_unreachable_hub_fails_fast_in_one_line_without_retry_output(no_network, monkeypatch, caplog, capfd):
    monkeypatch.setattr(factory, "hub_reachable", lambda timeout=factory.HUB_TIMEOUT_S: False)
    caplog.set_level(logging.DEBUG)
    start = time.perf_counter()
    with pytest.raises(CheckpointError) as info:
        load_model(NAME, pretrained=True)
    message = _assert_offline_error(info, time.perf_counter() - start)
    assert "the model hub (huggingface.co) is unreachable" in message
    assert not [r for r in caplog.records if "Retrying" in r.getMessage() or r.levelno >= logging.WARNING]
    out, err = capfd.readouterr()
    assert "Retry" not in out + err and err == ""
    assert no_network == []  # the hub was never asked: offline mode blocks every request


def test_hf_hub_offline_is_offline_without_a_connect(no_network, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert factory.hub_reachable() is False
    start = time.perf_counter()
    with pytest.raises(CheckpointError) as info:
        load_model(NAME, pretrained=True)
    assert "offline mode is on (HF_HUB_OFFLINE)" in _assert_offline_error(info, time.perf_counter() - start)
    assert no_network == []


def test_hub_reachable_is_one_bounded_connect(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls = []

    def hang(address, timeout=None):
        calls.append((address, timeout))
        time.sleep(2)  # a name lookup that hangs: socket timeouts do not bound it
        raise OSError("name lookup timed out")

    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.perf_counter()
    assert factory.hub_reachable(timeout=0.2) is False
    assert time.perf_counter() - start < 1
    assert calls == [(("huggingface.co", 443), 0.2)]

    class Connected:
        def close(self):
            pass

    monkeypatch.setattr(socket, "create_connection", lambda address, timeout=None: Connected())
    assert factory.hub_reachable(timeout=0.2) is True


def test_proxies_are_what_is_probed(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert factory.hub_address() == ("proxy.example", 3128)


def test_retry_warnings_are_silenced_when_the_hub_fails_midway(no_network, monkeypatch, caplog, capfd):
    import timm.models._hub as timm_hub

    def flaky_download(*args, **kwargs):
        logging.getLogger("huggingface_hub.utils._http").warning("Retrying in 1s [Retry 1/5].")
        raise ConnectionError("Connection reset by peer. Try again later.")

    monkeypatch.setattr(factory, "hub_reachable", lambda timeout=factory.HUB_TIMEOUT_S: True)
    monkeypatch.setattr(timm_hub, "hf_hub_download", flaky_download)
    caplog.set_level(logging.DEBUG, logger="root")
    with pytest.raises(CheckpointError) as info:
        load_model(NAME, pretrained=True)
    assert str(info.value) == (f"could not load pretrained weights for {NAME}: Connection reset by peer; check the "
                               "network access to the model hub, or pass a local weights file with --ckpt FILE")
    assert not [r for r in caplog.records if "Retrying" in r.getMessage()]
    assert "Retry" not in "".join(capfd.readouterr())
    assert logging.getLogger("huggingface_hub").level == logging.NOTSET or \
        logging.getLogger("huggingface_hub").level <= logging.WARNING  # restored afterwards


def test_cached_weights_load_offline(no_network, monkeypatch, tmp_path):
    """Offline, weights already in the Hugging Face cache load without asking the hub."""
    import timm
    from huggingface_hub import constants
    from safetensors.torch import save_file

    offline_before = constants.HF_HUB_OFFLINE
    cfg = timm.models.get_pretrained_cfg(NAME)
    reference = timm.create_model(NAME)
    repo = tmp_path / "hf-cache" / f"models--{cfg.hf_hub_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file(reference.state_dict(), repo / "snapshots" / commit / "model.safetensors")
    monkeypatch.setattr(factory, "hub_reachable", lambda timeout=factory.HUB_TIMEOUT_S: False)

    model, spec = load_model(NAME, pretrained=True)
    assert spec.kind == "timm-pretrained" and spec.source == f"timm:{NAME}"
    assert torch.equal(model.state_dict()["pos_embed"], reference.state_dict()["pos_embed"])
    assert no_network == [] and constants.HF_HUB_OFFLINE is offline_before  # offline mode only for the call
