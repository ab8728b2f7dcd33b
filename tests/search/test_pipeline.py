"""``segfactory build`` end to end at a tiny size: every artefact, resume after a kill in training, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from segfactory.factory.cli import main

TINY = ["--data", "camvid-mini", "--preset", "test", "--budget", "2", "--epochs", "1", "--precision", "fp32,int8",
        "--input-size", "64x64", "--train-set", "crop=64x64", "--encoder-weights", "none", "--threads", "1",
        "--train-threads", "1", "--train-workers", "0", "-q"]


pytestmark = pytest.mark.usefixtures("camvid_mini")


def _cli(args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "segfactory.factory.cli", "build", *map(str, args)],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_build_killed_in_training_resumes_and_writes_every_artefact(tmp_path):
    out = tmp_path / "b"
    p = _cli([*TINY, "--recipes", "adamw-poly,adam-poly", "--out", out])
    deadline = time.monotonic() + 300
    while not (out / "train" / "model" / "adamw-poly" / "last.pt").exists():  # inside the train stage
        if p.poll() is not None:
            pytest.fail(f"build ended before it was killed: {p.stderr.read()[-2000:]}")
        assert time.monotonic() < deadline, "the build did not reach training"
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    doc = json.loads((out / "build.json").read_text())
    assert {"search", "pick"} <= set(doc["stages"]) and "report" not in doc["stages"]
    trials = (out / "search" / "trials.jsonl").read_text()
    r = _cli([*TINY, "--recipes", "adamw-poly,adam-poly", "--out", out, "--resume"])
    _, err = r.communicate(timeout=600)
    assert r.returncode == 0, err[-2000:]
    assert (out / "search" / "trials.jsonl").read_text() == trials  # the search was not run again
    doc = json.loads((out / "build.json").read_text())
    assert list(doc["stages"]) == ["search", "pick", "train", "export", "check", "evaluate", "bench", "report"]
    for name in ("model.onnx", "model.onnx.json", "model.int8.onnx", "model.int8.onnx.json", "pick.json",
                 "report.md", "report.html", "front.png", "trained.png", "curves.png", "strip.png"):
        assert (out / name).is_file(), name
    card = json.loads((out / "model.onnx.json").read_text())
    assert card["genotype_key"] == doc["stages"]["pick"]["key"]
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "model.int8.onnx" in html  # self-contained, names deliverables
    assert "CamVid" in (out / "report.md").read_text()  # the data's licence
    train = doc["stages"]["train"]["model"]
    assert train["chosen"] in ("adamw-poly", "adam-poly") and set(train) >= {"adamw-poly", "adam-poly"}


@pytest.mark.parametrize("case", ["no-candidate", "bad-data", "unwritable", "bad-precision", "not-empty"])
def test_build_bad_input_is_one_line(case, tmp_path, capsys):
    out = tmp_path / "b"
    args = {"no-candidate": [*TINY, "--max-latency-ratio", "0.001", "--max-rejections", "2", "--out", out],
            "bad-data": [*TINY[2:], "--data", f"camvid:{tmp_path / 'none'}", "--out", out],
            "unwritable": [*TINY, "--out", tmp_path / "afile" / "b"],
            "bad-precision": [*TINY, "--precision", "fp32,int4", "--out", out],
            "not-empty": [*TINY, "--out", tmp_path]}[case]
    (tmp_path / "afile").write_text("x")
    with pytest.raises(SystemExit) as e:
        main(["build", *map(str, args)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert e.value.code == (1 if case == "no-candidate" else 2), err
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    if case == "no-candidate":  # the search's records stay for the user to read
        assert "rejected" in lines[0] and (out / "search" / "trials.jsonl").is_file()
        assert json.loads((out / "build.json").read_text())["stages"] == {}
    assert (tmp_path / "afile").read_text() == "x"
