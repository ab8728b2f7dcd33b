"""CI check of the segfactory-agent distribution: install it into a fresh virtual environment without torch, serve,
measure a tiny ONNX model through the client, stop. Exits 0 on success, 1 with one line on any failure.

    python agent/ci_check.py [--python python3.10] [--keep]

Standard library only; run from anywhere (paths are relative to this file). Needs PyPI (or a mirror) for the
agent's requirements. About a minute with pip's cache warm.
"""

from __future__ import annotations

import argparse
import json
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
INSTALL = "./agent[ort]"  # the command of docs/agent.md, run from the repository root

# Runs inside the venv: a one-Conv model made with onnx.helper, measured through the agent's client.
MEASURE = """
import json, sys
import numpy as np
from onnx import TensorProto, helper, numpy_helper
from segfactory.benchmarks.agent.client import measure_remote
w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "W")
graph = helper.make_graph([helper.make_node("Conv", ["x", "W"], ["y"], pads=[1, 1, 1, 1])], "conv",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, "H", "W"])], [w])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
settings = {"input_size": "32x32", "warmup_ms": 0, "iterations": 10, "duration_s": 0}
print(json.dumps(measure_remote(sys.argv[1], None, model.SerializeToString(), settings, retries=2)))
"""


class CheckFailed(Exception):
    pass


def run(cmd: list[str], *, cwd: Path, timeout: float, what: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or [""]
        raise CheckFailed(f"{what} failed (exit {proc.returncode}): {tail[0]}")
    return proc


def wait_for_url(proc: subprocess.Popen, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            m = re.search(r"serving on (http://\S+)", proc.stdout.readline())
            if m:
                return m.group(1)
    raise CheckFailed(f"the agent did not announce its URL within {timeout:g} s (exit code {proc.poll()})")


def check(python: str, tmp: Path) -> None:
    venv = tmp / "venv"
    run([python, "-m", "venv", str(venv)], cwd=tmp, timeout=120, what="python -m venv")
    bindir = venv / ("Scripts" if sys.platform == "win32" else "bin")
    vpy = str(bindir / "python")
    for stale in (REPO / "agent" / "build", *REPO.joinpath("agent").glob("*.egg-info")):
        shutil.rmtree(stale, ignore_errors=True)  # setuptools keeps deleted modules in build/ otherwise
    t0 = time.monotonic()
    run([vpy, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", INSTALL], cwd=REPO, timeout=600,
        what=f'pip install "{INSTALL}"')
    print(f"installed {INSTALL} in {time.monotonic() - t0:.0f} s")
    if subprocess.run([vpy, "-c", "import torch"], cwd=tmp, capture_output=True, check=False).returncode == 0:
        raise CheckFailed("torch is importable in the agent's environment")
    other = subprocess.run([str(bindir / "segfactory"), "train"], cwd=tmp, capture_output=True, text=True,
                           check=False)
    if other.returncode != 1 or other.stderr.count("\n") != 1 or "full segfactory" not in other.stderr:
        raise CheckFailed(f"'segfactory train' should be refused in one line: {other.stderr!r}")
    agent = subprocess.Popen([str(bindir / "segfactory"), "agent", "serve", "--backend", "ort", "--insecure-loopback",
                              "--host", "127.0.0.1", "--port", "0"],
                             cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = wait_for_url(agent, timeout=60)
        out = run([vpy, "-c", MEASURE, url], cwd=tmp, timeout=120, what="measuring through the client").stdout
        result = json.loads(out)
        if not (result.get("median_ms", 0) > 0 and result.get("latency_source") == "measured"):
            raise CheckFailed(f"unexpected answer: median_ms={result.get('median_ms')} "
                              f"latency_source={result.get('latency_source')}")
        print(f"measured on {url}: median {result['median_ms']:.3f} ms, {result['iterations']} iterations")
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            _, err = agent.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            agent.kill()
            _, err = agent.communicate()
    if agent.returncode != 0:
        raise CheckFailed(f"the agent exited with code {agent.returncode}: {(err.strip().splitlines() or [''])[-1]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=sys.executable, help="interpreter of the venv (default: this one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    args = parser.parse_args()
    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="segfactory-agent-ci-"))
    try:
        check(args.python, tmp)
    except (CheckFailed, subprocess.TimeoutExpired, OSError, ValueError) as e:
        print(f"agent CI check FAILED after {time.monotonic() - t0:.0f} s: {e}", file=sys.stderr)
        return 1
    finally:
        for stale in (REPO / "agent" / "build", *REPO.joinpath("agent").glob("*.egg-info")):
            shutil.rmtree(stale, ignore_errors=True)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"agent CI check passed in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
