"""The ``segfactory`` command line: a thin root that loads each command lazily, by string.

Only this module names the other packages' ``cli`` modules, so ``segfactory --help`` works without TensorRT,
Ray or a GPU, imports no torch (the device agent runs without it), and ``factory`` stays importable alone.
Every error a user can cause ends as one line on stderr and exit code 2 (bad input) or 1 (failed run).
"""

from __future__ import annotations

import importlib
import os
import sys

import click
from segfactory.factory._version import __version__

# name -> ("module:attribute", short help). The help text lives here so that listing commands imports nothing.
COMMANDS: dict[str, tuple[str, str]] = {
    "arch": ("segfactory.factory.commands.arch:arch", "Show, sample and inspect decoder architectures."),
    "weights": ("segfactory.factory.commands.weights:weights", "Import pretrained encoder weights."),
    "train": ("segfactory.factory.commands.train:train", "Train an architecture on a dataset."),
    "eval": ("segfactory.export.eval_cli:evaluate", "Evaluate a checkpoint or an ONNX model."),
    "predict": ("segfactory.factory.commands.train:predict", "Write label (and overlay) PNGs for images."),
    "export": ("segfactory.export.cli:export", "Export to ONNX (FP32/FP16/INT8) or a TensorRT engine."),
    "bench": ("segfactory.benchmarks.cli:bench", "Measure latency the way trtexec does."),
    "profile": ("segfactory.benchmarks.cli:profile", "Measure a latency lookup table for a target."),
    "agent": ("segfactory.benchmarks.agent.cli:agent", "Serve latency measurements on a device."),
    "search": ("segfactory.search.cli:search", "Search for a decoder (PPO, random, evolution)."),
    "build": ("segfactory.search.pipeline.cli:build",
              "From a dataset to a deployable model: search, train, export, check, evaluate, bench, report."),
}


def load(target: str):
    """Import ``"package.module:attribute"`` and return the attribute."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when invoked (or asked for their own help)."""

    def __init__(self, *args, lazy: dict[str, tuple[str, str]] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, name: str):
        if name in self.lazy:
            try:
                return load(self.lazy[name][0])
            except (ImportError, AttributeError) as e:
                return _missing(name, e)
        return super().get_command(ctx, name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, self.lazy[name][1]) for name in self.list_commands(ctx) if name in self.lazy]
        rows += [(n, c.get_short_help_str()) for n, c in self.commands.items() if n not in self.lazy]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(sorted(rows))


def _missing(name: str, error: Exception) -> click.Command:
    @click.command(name, context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
    def cmd() -> None:
        raise click.ClickException(f"command {name!r} is unavailable here: {error}")

    return cmd


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="segfactory")
def cli() -> None:
    """segfactory: compact semantic-segmentation models for edge devices.

    Searches template decoders over MobileNetV2 (Nekrasov et al., WACV 2020) with a latency- and
    size-aware reward, trains and evaluates them, exports ONNX and TensorRT, and measures latency.
    """


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI and turn every error into one line and an exit code."""
    from segfactory.factory.errors import SegfactoryError

    try:
        rv = cli.main(args=argv, prog_name="segfactory", standalone_mode=False)
        if isinstance(rv, int) and rv:
            sys.exit(rv)
    except SegfactoryError as e:
        _fail(str(e), e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.Abort:
        _fail("aborted", 1)
    except click.ClickException as e:
        hint = ""
        if isinstance(e, click.UsageError) and e.ctx is not None:
            hint = f" (see '{e.ctx.command_path} --help')"
        _fail(e.format_message() + hint, e.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except BrokenPipeError:
        sys.exit(1)
    except Exception as e:
        if os.environ.get("SEGFACTORY_DEBUG"):
            raise
        first = (str(e).strip().splitlines() or [""])[0]
        _fail(f"{type(e).__name__}: {first} (set SEGFACTORY_DEBUG=1 for the traceback)", 1)
    sys.exit(0)


def _fail(message: str, code: int) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
