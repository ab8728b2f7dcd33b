"""The searched decoder as a value: 3 templates and 7 layers (method.md §2.4-2.5, design.md "Genotype").

A :class:`Genotype` is frozen, validated on construction, round-trips exactly through canonical JSON and has a
stable :meth:`Genotype.key`. It also converts to and from the controller's flat encoding of 44 categorical
actions (method.md §3): ``[T0.op_a, T0.op_b, T0.merge, T1..., T2..., then per layer l: p1, p2, t, k, s]`` where
``k = repeats - 1`` and ``s = log2(stride)``. This module imports no torch.
"""

from __future__ import annotations

import hashlib
import json
import operator
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segfactory.factory.errors import InputError

FORMAT = "segfactory.genotype/1"

# Names are written; ids (the index in these tuples) are accepted on input.
OP_NAMES: tuple[str, ...] = (
    "sep_conv_3x3",
    "sep_conv_5x5",
    "global_average_pool",
    "max_pool_3x3",
    "sep_conv_5x5_dil6",
    "skip_connect",
)
MERGE_NAMES: tuple[str, ...] = ("psum", "cat")

NUM_TEMPLATES = 3
KEY_VERSION = "v2"  # what Genotype.key() hashes: the normal form (see Genotype.normal_form)
NUM_LAYERS = 7
NUM_ENCODER_INPUTS = 2  # pool index 0 = E0 (24 ch, stride 4), 1 = E1 (32 ch, stride 8)
MAX_REPEATS = 4
STRIDED_LAYERS = NUM_LAYERS // 2  # layers 0..2 may use stride 2 and resize to the smaller input


@dataclass(frozen=True)
class Template:
    """A recipe: ``op_a`` on a layer's first input, ``op_b`` on its second, ``merge`` joins them."""

    op_a: str
    op_b: str
    merge: str

    def to_list(self) -> list[str]:
        return [self.op_a, self.op_b, self.merge]


DEFAULT_TEMPLATE = Template("sep_conv_3x3", "sep_conv_3x3", "psum")  # what an unused template slot holds


@dataclass(frozen=True)
class Layer:
    """One decoder layer: inputs from the feature pool, a template, how often it repeats, its stride."""

    input_1: int
    input_2: int
    template: int
    repeats: int
    stride: int

    def to_list(self) -> list[int]:
        return [self.input_1, self.input_2, self.template, self.repeats, self.stride]


def _name(value: Any, names: tuple[str, ...], field: str, kind: str) -> str:
    if isinstance(value, bool):
        raise InputError(f"{field}={value!r} is not {_article(kind)} name or id")
    if isinstance(value, int):
        if 0 <= value < len(names):
            return names[value]
        raise InputError(f"{field}={value} is out of range 0..{len(names) - 1}")
    if isinstance(value, str) and value in names:
        return value
    raise InputError(f"{field}={value!r} is not {_article(kind)} (one of {', '.join(names)})")


def _article(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _int(value: Any, field: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{field}={value!r} is not an integer")
    if not lo <= value <= hi:
        raise InputError(f"{field}={value} is out of range {lo}..{hi}")
    return value


@dataclass(frozen=True)
class Genotype:
    """3 templates and 7 layers; validated in ``__post_init__`` (errors name the field and the value)."""

    templates: tuple[Template, ...]
    layers: tuple[Layer, ...]

    def __post_init__(self) -> None:
        if len(self.templates) != NUM_TEMPLATES:
            raise InputError(f"templates has {len(self.templates)} entries, expected {NUM_TEMPLATES}")
        if len(self.layers) != NUM_LAYERS:
            raise InputError(f"layers has {len(self.layers)} entries, expected {NUM_LAYERS}")
        for i, t in enumerate(self.templates):
            for field, names, kind in (("op_a", OP_NAMES, "op"), ("op_b", OP_NAMES, "op"),
                                       ("merge", MERGE_NAMES, "merge")):
                value = getattr(t, field)
                # ids are read by from_dict/from_actions; a constructed genotype holds names only
                if _name(value, names, f"templates[{i}].{field}", kind) != value:
                    raise InputError(f"templates[{i}].{field}={value!r}: a Genotype holds names, not ids "
                                     f"(use Genotype.from_dict for ids)")
        for l, layer in enumerate(self.layers):
            pool = NUM_ENCODER_INPUTS + l - 1
            _int(layer.input_1, f"layers[{l}].input_1", 0, pool)
            _int(layer.input_2, f"layers[{l}].input_2", 0, pool)
            _int(layer.template, f"layers[{l}].template", 0, NUM_TEMPLATES - 1)
            _int(layer.repeats, f"layers[{l}].repeats", 1, MAX_REPEATS)
            if isinstance(layer.stride, bool) or not isinstance(layer.stride, int) or layer.stride not in (1, 2):
                raise InputError(f"layers[{l}].stride={layer.stride!r} must be 1 or 2 (an integer)")
            if layer.stride == 2 and l >= STRIDED_LAYERS:
                raise InputError(f"layers[{l}].stride=2 is only allowed in layers 0..{STRIDED_LAYERS - 1}")

    # ---- canonical JSON -------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "templates": [t.to_list() for t in self.templates],
            "layers": [layer.to_list() for layer in self.layers],
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, data: Any) -> Genotype:
        if not isinstance(data, dict):
            raise InputError(f"genotype must be a JSON object, got {type(data).__name__}")
        fmt = data.get("format", FORMAT)
        if fmt != FORMAT:
            raise InputError(f"format={fmt!r} is not {FORMAT!r}")
        unknown = set(data) - {"format", "templates", "layers"}
        if unknown:
            raise InputError(f"genotype has unknown field(s): {', '.join(sorted(unknown))}")
        for field in ("templates", "layers"):
            if field not in data:
                raise InputError(f"genotype is missing the field {field!r}")
            if not isinstance(data[field], list):
                raise InputError(f"{field} must be a list, got {type(data[field]).__name__}")
        templates = []
        for i, t in enumerate(data["templates"]):
            if not isinstance(t, list) or len(t) != 3:
                raise InputError(f"templates[{i}]={t!r} must be [op_a, op_b, merge]")
            templates.append(
                Template(
                    _name(t[0], OP_NAMES, f"templates[{i}].op_a", "op"),
                    _name(t[1], OP_NAMES, f"templates[{i}].op_b", "op"),
                    _name(t[2], MERGE_NAMES, f"templates[{i}].merge", "merge"),
                )
            )
        layers = []
        for l, layer in enumerate(data["layers"]):
            if not isinstance(layer, list) or len(layer) != 5:
                raise InputError(f"layers[{l}]={layer!r} must be [input_1, input_2, template, repeats, stride]")
            layers.append(Layer(*layer))
        return cls(tuple(templates), tuple(layers))

    @classmethod
    def from_json(cls, text: str) -> Genotype:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"genotype is not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
        return cls.from_dict(data)

    def normal_form(self) -> Genotype:
        """The genotype with what the network does not use set to fixed defaults.

        Templates are renumbered in the order the layers first use them, identical templates are merged, and the
        slots no layer uses hold :data:`DEFAULT_TEMPLATE`. Genotypes with the same normal form build the same
        network, module for module and weight for weight (the decoder builds layer by layer, so template numbers
        and unused templates never reach it).
        """
        used: list[Template] = []
        layers = []
        for layer in self.layers:
            t = self.templates[layer.template]
            if t not in used:
                used.append(t)
            layers.append(Layer(layer.input_1, layer.input_2, used.index(t), layer.repeats, layer.stride))
        templates = tuple(used) + (DEFAULT_TEMPLATE,) * (NUM_TEMPLATES - len(used))
        return Genotype(templates, tuple(layers))

    def key(self) -> str:
        """A short stable hash of the genotype's normal form: genotypes that build the same network share it.

        (Keys of segfactory 0.1 hashed the genotype as written; the ``v2`` salt keeps the two kinds apart.)
        """
        n = self.normal_form().to_dict()
        canonical = json.dumps([n["templates"], n["layers"]], separators=(",", ":"))
        return hashlib.sha256(f"{KEY_VERSION}:{canonical}".encode()).hexdigest()[:12]

    # ---- the controller's 44-action encoding ------------------------------------------------------------------
    def to_actions(self) -> list[int]:
        actions: list[int] = []
        for t in self.templates:
            actions += [OP_NAMES.index(t.op_a), OP_NAMES.index(t.op_b), MERGE_NAMES.index(t.merge)]
        for layer in self.layers:
            s = 1 if layer.stride == 2 else 0
            actions += [layer.input_1, layer.input_2, layer.template, layer.repeats - 1, s]
        return actions

    @classmethod
    def from_actions(cls, actions: Sequence[int]) -> Genotype:
        sizes = action_space()
        if len(actions) != len(sizes):
            raise InputError(f"an action sequence has {len(sizes)} entries, got {len(actions)}")
        a = []
        for i, (x, n) in enumerate(zip(actions, sizes)):
            try:
                x = operator.index(x)  # ints and numpy/torch integers; never a float
            except TypeError:
                raise InputError(f"actions[{i}] ({action_labels()[i]})={x!r} is not an integer") from None
            a.append(_int(x, f"actions[{i}] ({action_labels()[i]})", 0, n - 1))
        templates = tuple(
            Template(OP_NAMES[a[3 * i]], OP_NAMES[a[3 * i + 1]], MERGE_NAMES[a[3 * i + 2]])
            for i in range(NUM_TEMPLATES)
        )
        base = 3 * NUM_TEMPLATES
        layers = tuple(
            Layer(a[base + 5 * l], a[base + 5 * l + 1], a[base + 5 * l + 2], a[base + 5 * l + 3] + 1,
                  2 ** a[base + 5 * l + 4])
            for l in range(NUM_LAYERS)
        )
        return cls(templates, layers)

    # ---- structure ------------------------------------------------------------------------------------------
    def used_as_input(self) -> set[int]:
        """Pool indices that some layer reads."""
        return {i for layer in self.layers for i in (layer.input_1, layer.input_2)}

    def collected(self) -> list[int]:
        """Pool indices of the "loose ends" the head concatenates: layer outputs no later layer reads.

        Encoder outputs are never collected; the last layer always is (method.md §2.5).
        """
        used = self.used_as_input()
        last = NUM_ENCODER_INPUTS + NUM_LAYERS - 1
        return [i for i in range(NUM_ENCODER_INPUTS, last + 1) if i not in used or i == last]


def action_space() -> list[int]:
    """Number of choices of each of the 44 decisions, in the controller's order."""
    sizes = [len(OP_NAMES), len(OP_NAMES), len(MERGE_NAMES)] * NUM_TEMPLATES
    for l in range(NUM_LAYERS):
        pool = NUM_ENCODER_INPUTS + l
        sizes += [pool, pool, NUM_TEMPLATES, MAX_REPEATS, 2 if l < STRIDED_LAYERS else 1]
    return sizes


def action_labels() -> list[str]:
    """Hierarchical labels of the 44 decisions, e.g. ``t1.merge`` or ``l3.input_2``."""
    labels = [f"t{i}.{f}" for i in range(NUM_TEMPLATES) for f in ("op_a", "op_b", "merge")]
    labels += [f"l{l}.{f}" for l in range(NUM_LAYERS) for f in ("input_1", "input_2", "template", "repeats", "stride")]
    return labels


def sample_genotype(rng: random.Random) -> Genotype:
    """A uniformly random valid genotype (each decision independently uniform)."""
    return Genotype.from_actions([rng.randrange(n) for n in action_space()])


def load_genotype(path: str | Path) -> Genotype:
    """Read a genotype from a JSON file: a bare genotype or any artefact holding one under ``"genotype"``."""
    from segfactory.factory.io import read_json

    data = read_json(path, "genotype file")
    if isinstance(data, dict) and "genotype" in data and "layers" not in data:
        data = data["genotype"]
    try:
        return Genotype.from_dict(data)
    except InputError as e:
        raise InputError(f"{path}: {e}") from None
