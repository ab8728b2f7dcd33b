"""Named architectures — the two published genotypes and torchvision's reference models — and resolution of
``--arch`` arguments into an architecture (a :class:`Genotype` or a :class:`Reference`)."""

from __future__ import annotations

from pathlib import Path

from segfactory.factory.errors import InputError
from segfactory.factory.genotype import Genotype, load_genotype
from segfactory.factory.reference import REFERENCES, Reference

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
    """Every name ``--arch`` takes besides a JSON file: the zoo's genotypes, then the reference models."""
    return sorted(ZOO) + REFERENCES.names()


def resolve_arch(arch: str) -> Genotype | Reference:
    """A zoo name, a reference model's name, a genotype JSON file, or any artefact JSON holding a ``genotype``
    (best.json) or a ``reference``."""
    if arch in ZOO:
        return ZOO[arch]
    if arch in REFERENCES:
        return Reference(arch)
    if Path(arch).suffix == ".json" or Path(arch).exists():
        from segfactory.factory.io import read_json

        data = read_json(arch, "architecture file")
        if isinstance(data, dict) and "reference" in data and "layers" not in data:
            return arch_from_dict(data.get("reference") if isinstance(data["reference"], dict) else data)
        return load_genotype(arch)
    raise InputError(f"unknown architecture {arch!r}: not one of {', '.join(list_archs())} nor a JSON file")


def arch_from_dict(data) -> Genotype | Reference:
    """The architecture an artefact records: a genotype object or a reference object (see :func:`arch_to_dict`)."""
    if isinstance(data, dict) and "reference" in data:
        return Reference.from_dict(data)
    return Genotype.from_dict(data)


def arch_to_dict(arch: Genotype | Reference) -> dict:
    return arch.to_dict()


def arch_name(arch: Genotype | Reference) -> str:
    """A short human name: the zoo or reference name, else the genotype's key."""
    if isinstance(arch, Reference):
        return arch.name
    for name, g in ZOO.items():
        if g == arch:
            return name
    return arch.key()
