"""The root CLI and ``arch``: help and version everywhere, one-line errors with exit code 2, JSON output."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from segfactory.factory.cli import COMMANDS, cli
from segfactory.factory.zoo import ZOO


def run(args):
    """Run ``segfactory ARGS`` as a user would (exit code, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "segfactory.factory.cli", *args], check=False, capture_output=True,
                          text=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def test_root_help_lists_every_command_without_importing_torch():
    code = (
        "import sys\nfrom segfactory.factory.cli import main\n"
        "sys.argv=['segfactory','--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "assert 'torch' not in sys.modules, 'segfactory --help imported torch'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for name in COMMANDS:
        assert name in proc.stdout


def test_version_and_help_on_every_level():
    runner = CliRunner()
    assert "segfactory, version" in runner.invoke(cli, ["--version"]).output
    for path in (["arch"], ["arch", "show"], ["arch", "sample"]):
        for flag in ("--help", "--version"):
            result = runner.invoke(cli, [*path, flag])
            assert result.exit_code == 0, (path, flag, result.output)


def test_arch_show_json_fields():
    code, out, err = run(["arch", "show", "arch0", "--num-classes", "19", "--encoder-weights", "none", "--json"])
    assert code == 0, err
    report = json.loads(out)
    assert report["params"] == 279_059 and report["decoder_params"] == 223_571
    assert report["encoder_params"] == 55_488
    assert report["output_shape"] == [1, 19, 360, 480]
    assert report["macs"] > 0 and report["key"] == ZOO["arch0"].key()


def test_arch_sample_prints_valid_genotype():
    runner = CliRunner()
    result = runner.invoke(cli, ["arch", "sample", "--seed", "5", "--count", "3"])
    from segfactory.factory.genotype import Genotype

    lines = result.output.strip().splitlines()
    assert len(lines) == 3 and len({Genotype.from_json(l).key() for l in lines}) == 3


@pytest.mark.parametrize(
    "content, expected",
    [
        ('{"templates": [], "layers": []}', "templates has 0 entries"),
        ("{oops", "is not valid JSON"),
        (json.dumps({**ZOO["arch0"].to_dict(), "layers": [[0, 9, 0, 1, 1]] * 7}), "layers[0].input_2=9"),
    ],
)
def test_malformed_genotype_is_one_line_exit_2(tmp_path, content, expected):
    path = tmp_path / "g.json"
    path.write_text(content)
    code, out, err = run(["arch", "show", str(path), "--encoder-weights", "none"])
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("Error: ") and expected in err
    assert "Traceback" not in err and out == ""


@pytest.mark.parametrize(
    "args, expected",
    [
        (["arch", "show", "arch7"], "unknown architecture 'arch7'"),
        (["arch", "show", "arch0", "--input-size", "360by480"], "is not HxW"),
        (["arch", "show", "arch0", "--num-classes", "0"], "--num-classes"),
        (["arch", "nosuch"], "No such command"),
    ],
)
def test_bad_usage_is_one_line_exit_2(args, expected):
    code, _, err = run(args)
    assert code == 2 and expected in err and err.count("\n") == 1
