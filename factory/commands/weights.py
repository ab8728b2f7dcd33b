"""``segfactory weights import-tflite``: make the bundled encoder weights file from the TFLite model."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import click
from segfactory.factory.commands.flags import option
from segfactory.factory.commands.options import json_option, version


@click.group()
@version
def weights() -> None:
    """Import pretrained encoder weights."""


@weights.command("import-tflite")
@click.argument("in_path", metavar="IN", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("out_path", metavar="OUT", type=click.Path(path_type=Path, dir_okay=False))
@option("--bn-images", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Directory of images (e.g. CamVid train) on which to re-estimate the encoder's BN statistics.")
@option("--seed", type=int, default=0, show_default=True, help="Seed of the random crops.")
@option("--num-images", type=click.IntRange(1, 100000), default=256, show_default=True,
              help="How many 224x224 random crops re-estimate the BN statistics.")
@json_option
@version
def import_tflite_cmd(in_path: Path, out_path: Path, bn_images: Path | None, seed: int, num_images: int,
                      as_json: bool) -> None:
    """Convert the MobileNetV2 TFLite classifier IN into the segfactory encoder weights file OUT.

    Dequantises the weights, maps them onto MobileNetV2 with TF 'SAME' padding, keeps features.0-6,
    optionally re-estimates BN statistics on real images, and records how the file was made.
    """
    from segfactory.factory.tflite_import import import_tflite

    argv = ["segfactory", "weights", "import-tflite", str(in_path), str(out_path)]
    if bn_images is not None:
        argv += ["--bn-images", str(bn_images), "--seed", str(seed), "--num-images", str(num_images)]
    summary = import_tflite(in_path, out_path, bn_images, seed, num_images, command=shlex.join(argv))
    if as_json:
        click.echo(json.dumps(summary))
        return
    bn = f"BN re-estimated on {summary['bn_images']} crops (seed {seed})" if summary["bn_images"] else "BN not re-estimated"
    click.echo(
        f"wrote {summary['out']}: {summary['tensors']} tensors, {summary['params']:,} parameters, "
        f"{summary['bytes'] / 1024:.1f} KiB; {bn}; source sha256 {summary['tflite_sha256'][:16]}..."
    )
