"""``segfactory agent serve`` runs, and measures, in a Python where torch cannot be imported (as on a Jetson)."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("aiohttp")
pytest.importorskip("onnxruntime")

from segfactory.benchmarks.agent.client import health, measure_remote

from tests.agent_fixtures import conv_model

# Loaded by every Python started with this folder on PYTHONPATH: the agent and its worker process.
BLOCKER = '''
import sys

class _NoTorch:
    """Make torch (and anything under it) unimportable, and say who tried."""

    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch.") or name.startswith("torchvision"):
            raise ImportError(f"torch is blocked in this test (import of {name!r})")
        return None

sys.meta_path.insert(0, _NoTorch())
'''


def _read_url(proc: subprocess.Popen, timeout: float) -> str:
    deadline = time.time() + timeout
    seen = b""
    while time.time() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            seen += line
            m = re.search(rb"serving on (http://\S+)", line)
            if m:
                return m.group(1).decode()
        if proc.poll() is not None:
            break
    raise AssertionError(f"agent did not start: {seen!r} {proc.stderr.read().decode()[-2000:] if proc.poll() is not None else ''}")


def test_agent_serves_and_measures_without_torch(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(blocker), os.environ.get("PYTHONPATH")])))
    check = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True,
                           check=False)
    assert check.returncode != 0 and "blocked" in check.stderr  # the blocker works
    token = tmp_path / "token"
    token.write_text("torch-free-token-0123456789")
    token.chmod(0o600)
    proc = subprocess.Popen(
        [sys.executable, "-m", "segfactory.factory.cli", "agent", "serve", "--port", "0", "--token-file", str(token),
         "--backend", "auto", "--cache-dir", str(tmp_path / "cache")],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = _read_url(proc, timeout=60)
        assert health(url, token)["backend"] == "ort"  # auto on a host without TensorRT
        result = measure_remote(url, token, conv_model(42), {"input_size": "24x24", "warmup_ms": 0, "iterations": 5,
                                                             "duration_s": 0}, retries=0)
        assert result["latency_source"] == "measured" and result["input_shape"] == [1, 3, 24, 24]
        assert result["median_ms"] > 0 and result["agent"]["cache"] == "miss"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert b"blocked" not in err, err.decode()[-2000:]


def test_agent_distribution_command_refuses_the_other_commands_in_one_line(capsys):
    # the `segfactory` command of the segfactory-agent distribution (agent/pyproject.toml)
    from segfactory.benchmarks.agent.entry import main

    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--arch", "arch0"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and err.count("\n") == 1
    assert "'segfactory train' is not part of the segfactory-agent distribution" in err and "full segfactory" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["agent", "serve", "--help"])
    assert exit_info.value.code == 0 and "--insecure-loopback" in capsys.readouterr().out
