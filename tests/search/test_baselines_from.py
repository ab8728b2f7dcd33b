"""``segfactory build --baselines-from DIR``: an earlier build's baselines reused (not trained again), a DIR trained
otherwise refused before anything is written."""

from __future__ import annotations

import json
import shutil

import pytest
from segfactory.factory.cli import main

TINY = ["--data", "camvid-mini", "--epochs", "1", "--precision", "fp32", "--recipes", "adamw-poly",
        "--train-set", "crop=64x64", "--encoder-weights", "none", "--train-threads", "1", "--train-workers", "0",
        "-q"]
BASELINES = ("arch0", "lraspp_mobilenet_v3_large")


def _options(out, **kw):
    """TINY's build, made here so that the pick times one deployed configuration, not six (seconds each)."""
    from segfactory.search.options import SearchOptions
    from segfactory.search.pipeline.options import BuildOptions

    search = SearchOptions(data="camvid-mini", preset="test", budget=1, input_size=(64, 64), threads=1,
                           encoder_weights="none")
    return BuildOptions(out=str(out), search=search, epochs=1, precisions=("fp32",), recipes=("adamw-poly",),
                        train_set={"crop": (64, 64)}, train_threads=1, workers=0, deploy_configs=((64, 2),), **kw)


@pytest.fixture(scope="module")
def build_a(tmp_path_factory):
    """A tiny build with its baselines trained (searched once for the module)."""
    from segfactory.factory.datasets import camvid_mini_path
    from segfactory.factory.errors import InputError
    from segfactory.search.pipeline.run import run_build

    try:
        camvid_mini_path()
    except InputError as e:
        pytest.skip(str(e))
    a = tmp_path_factory.mktemp("a") / "a"
    run_build(_options(a, baselines=True))
    return a.resolve()


def _b(a, *more) -> list[str]:  # the command of a build of the same data from A's search
    return ["build", *TINY, "--from-search", str(a / "search"), "--baselines-from", str(a), *map(str, more)]


def test_baselines_reused_not_trained(build_a, tmp_path):
    from segfactory.search.pipeline.run import run_build

    a, b = build_a, tmp_path / "b"
    run_build(_options(b, from_search=str(a / "search"), baselines_from=str(a)))
    doc_a, doc = (json.loads((d / "build.json").read_text()) for d in (a, b))
    train, ev = doc["stages"]["train"], doc["stages"]["evaluate"]
    assert doc["options"]["baselines"] and doc["options"]["baselines_from"] == str(a)
    assert (b / "train" / "model" / "adamw-poly" / "last.pt").is_file()  # the pick was trained here
    for name in BASELINES:
        run = b / "train" / name / "adamw-poly"
        assert train[name]["adamw-poly"]["reused_from"] == str(a)
        assert train[name]["checkpoint"] == f"train/{name}/adamw-poly/model.pt"
        assert not (run / "last.pt").exists()  # copied, not trained
        assert (run / "model.pt").read_bytes() == (a / "train" / name / "adamw-poly" / "model.pt").read_bytes()
        assert doc["stages"]["export"][name]["fp32"]["reused_from"] == str(a)
        assert (b / "baselines" / f"{name}.onnx").read_bytes() == (a / "baselines" / f"{name}.onnx").read_bytes()
        assert ev[name]["fp32"]["miou"] == doc_a["stages"]["evaluate"][name]["fp32"]["miou"]
        assert ev[name]["fp32"]["reused_from"] == str(a)
        assert f"{name} fp32" in doc["stages"]["bench"]["results"]  # timed here, beside the model
    assert "reused_from" not in train["model"]["adamw-poly"]
    assert f"reused from `{a}`" in (b / "report.md").read_text()


@pytest.mark.parametrize("case", ["epochs", "data", "not-a-build", "no-baselines"])
def test_baselines_from_refused(case, build_a, tmp_path, capsys):
    from segfactory.factory.datasets import camvid_mini_path

    a, out = build_a, tmp_path / "b"
    if case == "no-baselines":  # a build whose train stage holds only the pick
        src, a = a, tmp_path / "plain"
        a.mkdir()
        doc = json.loads((src / "build.json").read_text())
        doc["stages"]["train"] = {"model": doc["stages"]["train"]["model"]}
        (a / "build.json").write_text(json.dumps(doc))
        shutil.copytree(src / "search", a / "search")
    args = {"epochs": [*_b(a, "--out", out), "--epochs", "2"],
            "data": [*_b(a, "--out", out), "--data", f"camvid:{camvid_mini_path()}"],
            "not-a-build": [*_b(tmp_path, "--out", out)],
            "no-baselines": [*_b(a, "--out", out)]}[case]
    expected = {"epochs": "--epochs 1 there, --epochs 2 here", "data": "--data camvid-mini there, --data camvid:",
                "not-a-build": "holds no build", "no-baselines": "holds no trained arch0 or "}[case]
    with pytest.raises(SystemExit) as e:
        main(args)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert e.value.code == 2 and len(lines) == 1 and lines[0].startswith("Error: "), lines
    assert expected in lines[0], lines[0]
    assert not out.exists()


def test_baselines_from_round_trips_and_implies_baselines(tmp_path):
    from segfactory.search.pipeline.options import BuildOptions

    o = BuildOptions(out=str(tmp_path / "b"), baselines_from=str(tmp_path / "a"))
    assert o.baselines and o.baselines_from == str((tmp_path / "a").resolve())
    back = BuildOptions.from_dict(json.loads(json.dumps(o.to_dict())))
    assert back.baselines_from == o.baselines_from and back.baselines
