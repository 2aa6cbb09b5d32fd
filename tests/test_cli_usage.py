"""The command line's own failures: one `error:` line, the right exit code, no tracebacks."""
import signal
import subprocess
import sys

import pytest

ATTNLAB = [sys.executable, "-m", "attnlab"]


def run(*args, **kw):
    return subprocess.run(ATTNLAB + list(args), capture_output=True, text=True, **kw)


@pytest.mark.parametrize("args, says", [
    (["globality", "--bogus"], "No such option: --bogus"),
    (["globality", "--ckpt", "x.pt", "--batch-size", "abc"], "Invalid value for '--batch-size'"),
    (["nosuch"], "No such command 'nosuch'"),
    (["info", "--json", "yes", "--ckpt", "x.pt"], "Got unexpected extra argument"),
])
def test_usage_errors_are_one_line(args, says):
    r = run(*args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], r.stderr
    assert "--help" in lines[0] and "Traceback" not in r.stderr


def test_help_into_a_closed_pipe_is_not_an_error():
    r = subprocess.run(" ".join(ATTNLAB) + " --help | head -1", shell=True, capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == ""
    r = subprocess.run(["bash", "-c", "set -o pipefail; " + " ".join(ATTNLAB) + " globality --help | head -1"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_flags_are_not_shown_as_taking_a_value():
    r = run("info", "--help")
    line = next(l for l in r.stdout.splitlines() if "--json" in l)
    assert "<bool>" not in line and "BOOL" not in line


def test_ctrl_c_says_it_stopped():
    # a long-running command interrupted by SIGINT: it says it stopped, exit 130, no traceback
    code = ("import time, sys; from attnlab import cli\n"
            "def sleepy():\n    print('ready', flush=True); time.sleep(60)\n"
            "cli.app.command()(sleepy)\ncli.main(['sleepy'])\n")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("stopped: interrupted") and "Traceback" not in err
