"""Named architectures (the two published genotypes) and resolution of ``--arch`` arguments."""

from __future__ import annotations

from pathlib import Path

from segfactory.factory.errors import InputError
from segfactory.factory.genotype import Genotype, load_genotype

# method.md §7 / design.md, in canonical form: layers are [input_1, input_2, template, repeats, stride].
ZOO: dict[str, Genotype] = {
    "arch0": Genotype.from_dict(
        {
            "templates": [
                ["max_pool_3x3", "sep_conv_3x3", "cat"],
                ["sep_conv_5x5_dil6", "sep_conv_5x5", "cat"],
                ["max_pool_3x3", "sep_conv_5x5", "cat"],
            ],
            "layers": [[0, 1, 0, 1, 2], [2, 1, 2, 2, 1], [3, 1, 1, 2, 1], [1, 1, 2, 1, 1], [3, 0, 2, 1, 1],
                       [5, 3, 2, 2, 1], [0, 5, 0, 2, 1]],
        }
    ),
    "arch1": Genotype.from_dict(
        {
            "templates": [
                ["sep_conv_5x5", "sep_conv_5x5", "psum"],
                ["sep_conv_5x5", "max_pool_3x3", "psum"],
                ["max_pool_3x3", "sep_conv_5x5_dil6", "psum"],
            ],
            "layers": [[1, 1, 0, 1, 1], [0, 1, 1, 2, 2], [3, 1, 2, 4, 1], [3, 0, 2, 3, 1], [0, 1, 2, 1, 1],
                       [2, 1, 1, 4, 1], [4, 0, 2, 3, 1]],
        }
    ),
}


def list_archs() -> list[str]:
    return sorted(ZOO)


def resolve_arch(arch: str) -> Genotype:
    """A zoo name, a genotype JSON file, or any artefact JSON holding a ``genotype`` (best.json)."""
    if arch in ZOO:
        return ZOO[arch]
    if Path(arch).suffix == ".json" or Path(arch).exists():
        return load_genotype(arch)
    raise InputError(f"unknown architecture {arch!r}: not one of {', '.join(list_archs())} nor a JSON file")
