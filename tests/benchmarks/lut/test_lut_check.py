"""``segfactory profile --check`` (issue 13.5) on a tiny table, and tables refused in one line: other settings,
corrupt files, seed ranges the table was fitted on, device tables without their agent."""

from __future__ import annotations

import json

import pytest
from segfactory.benchmarks.lut.check import render_check
from segfactory.benchmarks.lut.protocol import seed_set
from segfactory.benchmarks.lut.table import Lut
from segfactory.benchmarks.targets import get_target
from segfactory.factory.config import ModelConfig
from segfactory.factory.errors import InputError

SIZE = (32, 32)
CFG = ModelConfig.create(11, 48, 1, "none")
MODEL = ["--num-classes", "11", "--agg-size", "48", "--sep-repeats", "1", "--encoder-weights", "none"]


@pytest.fixture(scope="module")
def old_table(tmp_path_factory):
    """A table of this host in today's format (segfactory.lut/1) with the units of seeds 0-1."""
    path = tmp_path_factory.mktemp("lut") / "lut.json"
    lut = Lut.new(CFG, SIZE, threads=1, path=path)
    lut.fill({u for _, g in seed_set(0, 1) for u in lut.units(g, CFG)}, CFG, runs=3)
    data = {k: v for k, v in lut.data.items() if k not in ("predictor", "sets", "whole", "anchor", "profile")}
    data.update(format="segfactory.lut/1", overhead={"intercept_ms": 0.05, "scale": 1.0, "per_node_ms": 0.0})
    path.write_text(json.dumps(data))
    return path


def profile(capsys, *argv) -> tuple[int, str, str]:
    """``segfactory profile ARGV`` through the root entry point (errors as one line and an exit code)."""
    from segfactory.factory.cli import main

    try:
        main(["profile", *map(str, argv)])
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(capsys, code: int, *argv) -> str:
    got, out, err = profile(capsys, *argv)
    assert got == code, (out, err)
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_profile_check_prints_the_figures_on_a_table_of_todays_format(old_table, capsys):
    code, out, err = profile(capsys, "--check", old_table, "--eval-seeds", "0-1", "--min-seconds", "0.05", "--quiet")
    assert code == 0, err
    assert "seeds 0-1" in out and "2 genotypes:" in out
    for figure in ("within +-10%", "MAPE", "Kendall tau"):
        assert figure in out
    assert Lut.load(old_table).data["format"] == "segfactory.lut/1"  # checking does not rewrite the table
    shown = render_check({"lut": "t.json", "backend": "ort", "threads": 2, "input_size": [360, 480],
                          "predictor": "kernels", "seeds": [0, 39],
                          "anchored": {"n": 40, "within_10pct": 0.925, "mape": 0.041, "kendall_tau": 0.96},
                          "raw": {"n": 40, "within_10pct": 0.5, "mape": 0.12, "kendall_tau": 0.9}})
    assert "anchored 40 genotypes: 92% within +-10%, MAPE 4.1%, Kendall tau 0.960" in shown


def test_check_refuses_seeds_the_table_was_fitted_on(old_table, tmp_path, capsys):
    data = json.loads(old_table.read_text())
    data["overhead"]["fit_keys"] = [seed_set(1, 1)[0][1].key()]
    fitted = tmp_path / "fitted.json"
    fitted.write_text(json.dumps(data))
    line = one_line_error(capsys, 1, "--check", fitted, "--eval-seeds", "0-3")
    assert "seed1" in line and "refusing" in line


def test_tables_made_elsewhere_or_broken_are_refused_in_one_line(old_table, tmp_path, capsys):
    line = one_line_error(capsys, 2, "--out", old_table, "--threads", "2", "--input-size", "32x32", *MODEL, "--quiet")
    assert "1 thread(s), not 2" in line
    line = one_line_error(capsys, 2, "--out", old_table, "--input-size", "64x64", *MODEL)
    assert "input 32x32, not 64x64" in line
    with pytest.raises(InputError, match="1 thread"):
        get_target("cpu", lut=old_table, threads=2)
    bad = tmp_path / "bad.json"
    for text, fragment in (("{torn", "not valid JSON"), (json.dumps({"format": "segfactory.lut/9"}), "format")):
        bad.write_text(text)
        assert fragment in one_line_error(capsys, 2, "--check", bad)
    device = json.loads(old_table.read_text())
    device.update(measured_by="agent", target="jetson-orin-nano", device="Orin")
    bad.write_text(json.dumps(device))
    assert "needs --device-url" in one_line_error(capsys, 2, "--check", bad)
    device.update(measured_by=None, device="another host")
    bad.write_text(json.dumps(device))
    assert "not on this host" in one_line_error(capsys, 2, "--check", bad, "--eval-seeds", "0-1")
