"""The bad-input matrix: one table of bad inputs over every command, each with its exit code and message.

Every case must end in exactly one line on stderr (``Error: ...``), no traceback, the exit code the README
defines (2 bad input, 1 a failed run), and must leave earlier files alone. Cases run in-process through the real
entry point; the few that are about what torch prints before the error run in a subprocess.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from segfactory.factory.cli import main

from tests.synthetic_seg import make_camvid


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Bad and good inputs made once: corrupt files, a tiny dataset, a genotype with a float stride, ..."""
    from segfactory.factory.zoo import ZOO

    root = tmp_path_factory.mktemp("bad")
    make_camvid(root / "camvid", counts=(("train", 2), ("val", 1)))
    (root / "notjson.json").write_text("{ not json")
    (root / "afile").write_text("a file where a folder is expected")
    (root / "corrupt.onnx").write_bytes(b"\x08\x07 this is not a protobuf")
    (root / "corrupt.pt").write_bytes(b"\x80 not a torch file")
    (root / "plain.pt").write_bytes(pickle.dumps({"x": 1}, protocol=4))
    g = ZOO["arch0"].to_dict()
    g["layers"][0][4] = 1.0
    (root / "float_stride.json").write_text(json.dumps(g))
    rgb_mask = make_camvid(root / "rgbmask", counts=(("train", 2), ("val", 1)))
    Image.fromarray(np.zeros((64, 96, 3), np.uint8)).save(rgb_mask / "val" / "seq_0000.png")
    Image.fromarray(np.zeros((64, 96, 3), np.uint8)).save(rgb_mask / "valannot" / "seq_0000.png")
    images = root / "images"
    images.mkdir()
    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(images / "a_good.png")
    (images / "b_bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    import torch
    from segfactory.factory.checkpoint import save_checkpoint
    from segfactory.factory.config import ModelConfig
    from segfactory.factory.model import build_model

    torch.manual_seed(0)
    tiny = build_model(ZOO["arch0"], ModelConfig.create(11, 8, 1, "none"), load_weights=False)
    save_checkpoint(root / "tiny.pt", tiny, metrics={}, train_config={"arch": "arch0"})
    nan_lut = {"format": "segfactory.lut/1", "device": "x", "backend": "ort", "threads": 1, "precision": "fp32",
               "batch": 1, "input_size": [64, 64], "config": {}, "entries": {"head|8|16x16": {"ms": float("nan")}}}
    (root / "nan_lut.json").write_text(json.dumps(nan_lut))
    return root


def run(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return info.value.code, out, err


# (id, argv with {root} for the fixture folder, exit code, fragment of the one-line message)
CASES = [
    ("genotype-not-json", ["arch", "show", "{root}/notjson.json"], 2, "not valid JSON"),
    ("genotype-float-stride", ["arch", "show", "{root}/float_stride.json"], 2, "stride=1.0"),
    ("arch-unknown", ["arch", "show", "arch9"], 2, "unknown architecture"),
    ("train-data-spec", ["train", "--arch", "arch0", "--data", "nope:x", "--out", "{tmp}/t"], 2, "data spec"),
    ("train-crop-memory", ["train", "--arch", "arch0", "--data", "camvid:{root}/camvid", "--crop", "4000x4000",
                           "--batch-size", "8", "--out", "{tmp}/t"], 2, "estimated"),
    ("train-lr-nan", ["train", "--arch", "arch0", "--data", "camvid:{root}/camvid", "--decoder-lr", "nan",
                      "--out", "{tmp}/t"], 2, "'--decoder-lr': 'nan' is not a finite number"),
    ("train-encoder-not-ours", ["train", "--arch", "arch0", "--data", "camvid:{root}/camvid", "--encoder-weights",
                                "{root}/plain.pt", "--out", "{tmp}/t"], 2, "encoder weights file"),
    ("train-out-under-file", ["train", "--arch", "arch0", "--data", "camvid:{root}/camvid", "--out",
                              "{root}/afile/run"], 2, "afile"),
    ("eval-plain-pickle", ["eval", "--checkpoint", "{root}/plain.pt", "--data", "camvid:{root}/camvid"], 2,
     "cannot be read"),
    ("eval-corrupt-checkpoint", ["eval", "--checkpoint", "{root}/corrupt.pt", "--data", "camvid:{root}/camvid"], 2,
     "cannot be read"),
    ("eval-corrupt-onnx", ["eval", "--model", "{root}/corrupt.onnx", "--data", "camvid:{root}/camvid"], 2,
     "corrupt.onnx"),
    ("eval-rgb-mask", ["eval", "--checkpoint", "{root}/tiny.pt", "--data", "camvid:{root}/rgbmask"], 2,
     "channels"),
    ("export-size-memory", ["export", "--arch", "arch0", "--encoder-weights", "none", "--input-size", "8000x8000",
                            "--out", "{tmp}/m.onnx"], 2, "estimated"),
    ("export-out-under-file", ["export", "--arch", "arch0", "--encoder-weights", "none", "--input-size", "48x64",
                               "--out", "{root}/afile/m.onnx"], 2, "is a file"),
    ("export-out-suffix", ["export", "--arch", "arch0", "--input-size", "48x64", "--out", "{tmp}/m.txt"], 2,
     ".onnx"),
    ("bench-corrupt-onnx", ["bench", "{root}/corrupt.onnx", "--backend", "ort", "--input-size", "48x64"], 2,
     "corrupt.onnx"),
    ("bench-batch-memory", ["bench", "--arch", "arch0", "--backend", "ort", "--input-size", "360x480", "--batch",
                            "1024"], 2, "estimated"),
    ("search-crop-memory", ["search", "--data", "camvid:{root}/camvid", "--budget", "1", "--proxy-set",
                            "crop=4000x4000", "--out", "{tmp}/s", "-q"], 2, "estimated"),
    ("profile-out-under-file", ["profile", "--target", "cpu", "--input-size", "64x64", "--out",
                                "{root}/afile/lut.json"], 2, "afile"),
    ("profile-nan-table", ["profile", "--target", "cpu", "--input-size", "64x64", "--out", "{root}/nan_lut.json"], 2,
     "head|8|16x16"),
    ("search-budget", ["search", "--budget", "0", "--out", "{tmp}/s"], 2, "budget"),
]


@pytest.mark.parametrize("case, argv, code, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, argv, code, fragment, files, tmp_path, capsys):
    before = sorted(p.relative_to(files) for p in files.rglob("*"))
    argv = [a.format(root=files, tmp=tmp_path) for a in argv]
    got, out, err = run(argv, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert got == code, err
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in err, err
    assert fragment in lines[0], lines[0]
    assert out == ""
    assert sorted(p.relative_to(files) for p in files.rglob("*")) == before  # nothing written next to inputs


def test_rgb_mask_error_names_the_file_once(files, capsys):
    """Issue 15.9: the RGB-mask error printed its path twice."""
    _, _, err = run(["eval", "--checkpoint", files / "tiny.pt", "--data", f"camvid:{files}/rgbmask"], capsys)
    assert err.count("seq_0000.png") == 1, err


def test_predict_checks_every_input_before_writing(files, tmp_path, capsys):
    """Issue 15.9: a bad image after good ones left partial output; now nothing is written."""
    out = tmp_path / "pred"
    code, _, err = run(["predict", "--checkpoint", files / "tiny.pt", "--input", files / "images", "--out", out],
                          capsys)
    assert code == 2 and "b_bad.png" in err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("argv", [
    ["eval", "--checkpoint", "{root}/plain.pt", "--data", "camvid:{root}/camvid"],
    ["train", "--arch", "arch0", "--data", "camvid:{root}/camvid", "--encoder-weights", "{root}/plain.pt",
     "--out", "{tmp}/t"],
])
def test_no_torch_warning_before_the_error(files, tmp_path, argv):
    """Issue 15.9: torch printed a pickle-protocol warning before the one-line error (a subprocess sees it)."""
    argv = [a.format(root=files, tmp=tmp_path) for a in argv]
    res = subprocess.run([sys.executable, "-m", "segfactory.factory.cli", *argv], capture_output=True, text=True,
                         timeout=180, check=False)
    assert res.returncode == 2
    assert len([line for line in res.stderr.splitlines() if line.strip()]) == 1, res.stderr


@pytest.fixture(scope="module")
def runs(files):
    """A finished-looking search (for --from-search), a search whose run.json lost its options, and a finished
    build made with --budget 2 (for a resume that asks for more)."""
    from segfactory.search.context import RUN_FORMAT
    from segfactory.search.options import SearchOptions
    from segfactory.search.pipeline.options import BuildOptions
    from segfactory.search.pipeline.state import BuildState

    data = f"camvid:{files}/camvid"
    done = files / "runs" / "search"
    done.mkdir(parents=True)
    (done / "run.json").write_text(json.dumps({"format": RUN_FORMAT, "options": {"data": data},
                                               "input_size": [64, 96]}))
    (done / "trials.jsonl").write_text("")
    damaged = files / "runs" / "damaged"
    damaged.mkdir()
    (damaged / "run.json").write_text(json.dumps({"format": RUN_FORMAT}))
    build = files / "runs" / "build"
    build.mkdir()
    state = BuildState(build, BuildOptions(out=str(build), search=SearchOptions(data=data, budget=2)))
    state.finish("search", {"dir": str(build / "search")})
    return files / "runs"


# issue 23: refused before any work, and --out ({tmp}/out) is neither created nor written
BEFORE_WORK = [
    ("build-ratio-nan", ["build", "--max-latency-ratio", "nan"], "not a finite number"),
    ("build-latency-ms-nan", ["build", "--max-latency-ms", "nan"], "not a finite number"),
    ("build-search-minutes-nan", ["build", "--search-minutes", "nan"], "not a finite number"),
    ("search-ratio-nan", ["search", "--max-latency-ratio", "nan"], "not a finite number"),
    ("build-no-recipe", ["build", "--recipes", ","], "--recipes names no recipe"),
    ("build-train-minutes-nan", ["build", "--train-minutes", "nan"], "--train-minutes"),
    ("build-train-set-type", ["build", "--train-set", "batch_size=2.5"], "batch size 2.5"),
    ("build-from-non-search", ["build", "--from-search", "{root}/images"], "holds no search"),
    ("build-verify-every-cpu", ["build", "--verify-every", "2"], "--verify-every"),
    ("build-from-search-strategy", ["build", "--from-search", "{runs}/search", "--strategy", "random",
                                    "--max-rejections", "3"], "--strategy, --max-rejections: only for a build that"),
    ("build-from-search-budget", ["build", "--from-search", "{runs}/search", "--budget", "3"], "--budget: only"),
    ("build-from-search-size", ["build", "--from-search", "{runs}/search", "--input-size", "32x32"],
     "searched at 64x96"),
    ("search-proxy-list", ["search", "--proxy-set", "stage1_lr=[1,2]"], "stage1_lr=[1, 2] must be a finite number"),
    ("search-proxy-float-batch", ["search", "--proxy-set", "stage2_batch=2.5"], "stage2_batch=2.5 must be an int"),
    ("search-proxy-null", ["search", "--proxy-set", "stage1_epochs=null"], "stage1_epochs=null must be an integer"),
    ("pick-out-unwritable", ["search", "pick", "{runs}/search", "--out", "{root}/afile/pick.json"], "afile"),
    ("profile-check-size", ["profile", "--check", "{root}/nan_lut.json", "--input-size", "64x64", "--threads", "2"],
     "--input-size, --threads: not used by --check"),
    ("export-calib-fp32", ["export", "--arch", "arch0", "--input-size", "48x64", "--precision", "fp32",
                           "--calib-images", "5", "--out", "{tmp}/out/m.onnx"], "--calib-images: only with"),
]


@pytest.mark.parametrize("case, argv, fragment", BEFORE_WORK, ids=[c[0] for c in BEFORE_WORK])
def test_refused_before_any_work(case, argv, fragment, files, runs, tmp_path, capsys):
    argv = [a.format(root=files, runs=runs, tmp=tmp_path) for a in argv]
    if argv[0] in ("build", "search") and argv[1] != "pick":
        argv += ["--data", f"camvid:{files}/camvid", "--out", str(tmp_path / "out"), "-q"]
        argv += [] if "--from-search" in argv else ["--preset", "test"]
    got, _, err = run(argv, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert got == 2, err
    assert len(lines) == 1 and lines[0].startswith("Error: ") and fragment in lines[0], err
    assert not (tmp_path / "out").exists()  # the corrected command can use the same --out


def test_resume_on_damaged_run_json(runs, capsys):
    got, _, err = run(["search", "--resume", "--out", runs / "damaged"], capsys)
    assert got == 2 and "damaged: it lacks options" in err, err


def test_resume_of_finished_build_with_more_budget(files, runs, capsys):
    before = (runs / "build" / "build.json").read_text()
    got, _, err = run(["build", "--resume", "--budget", "3", "--data", f"camvid:{files}/camvid",
                       "--out", runs / "build"], capsys)
    assert got == 2 and "would change nothing" in err and "segfactory search --resume" in err, err
    assert (runs / "build" / "build.json").read_text() == before


def test_pick_says_it_skipped_a_torn_last_line(runs, tmp_path, capsys):
    import shutil

    d = tmp_path / "search"
    shutil.copytree(runs / "search", d)
    (d / "trials.jsonl").write_text('{"index": 0, "status": "rejected", "reward": null}\n{"index": 1, "sta')
    got, _, err = run(["search", "pick", d], capsys)
    assert got == 1 and "no status-ok candidate" in err, err
    assert "Warning: skipped a torn last line" in err, err
