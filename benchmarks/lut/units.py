"""The units a model is cut into for the latency lookup table, and every unit the search space can produce.

A unit is a piece of the network whose cost depends only on its canonical signature (a string):

    encoder|tf_same|360x480              the fixed encoder at the input size
    op|sep_conv_5x5|32>64|s2|90x120      a branch op: name, channels in>out, stride, input HxW
    adapt|32>64|45x60                    a merge's 1x1 conv + BN + ReLU that equalises channels
    resize|64|45x60>90x120               a bilinear resize (merges, collection of loose ends)
    psum|64|90x120 / cat|64|90x120       the merge itself, both inputs aligned
    concat|64,32|90x120                  one concatenation step of the collected loose ends
    head|96|90x120                       the head (agg size and classes come from the configuration)
    upsample|11|90x120>360x480           the final upsample of the logits

Nothing here knows what an op or a merge does to a feature map. :func:`model_units` walks the decoder's own
wiring (``factory.decoder.walk_decoder``) and asks each op's and merge's module for its output shape by
running it on an empty batch; an op whose module does not depend on the stride is recorded at ``s1``, and an
op that returns its input is no unit. :func:`enumerate_units` walks the same wiring over sets of reachable
(channels, size) states instead of one genotype, grouping the ops (and merges) that move a state alike: a new
op with a new behaviour forms a group of its own, and one that cannot run on a state (a pooling window
larger than the map) ends the chains through it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import cache, lru_cache
from typing import Any

from segfactory.factory import genotype as genotypes
from segfactory.factory.config import ModelConfig
from segfactory.factory.decoder import (
    CollectStep,
    Feature,
    HeadStep,
    MergeStep,
    OpStep,
    collect_step,
    walk_decoder,
    walk_repeat,
)
from segfactory.factory.errors import InputError
from segfactory.factory.genotype import MAX_REPEATS, NUM_LAYERS, STRIDED_LAYERS, Genotype, Template
from segfactory.factory.ops import get_merge, get_op

Size = tuple[int, int]
Emit = Callable[[str], None]


def fmt(s: Size) -> str:
    return f"{s[0]}x{s[1]}"


# ---- output shapes, from the modules themselves -----------------------------------------------------------
# A module runs on a zero-batch CPU tensor: the real kernels give the output shape without computing an
# element (meta tensors would too, but their shape functions for conv and resize take milliseconds a call).
# The caches are keyed by the factory itself, not its name: a name registered again is a new op.
def _shapes(module: Any, *xs: Feature) -> tuple[list[Feature], bool]:
    """The outputs of ``module`` on ``xs`` (batch 0), and whether its output is its first input itself."""
    import torch

    inputs = [torch.empty(0, f.channels, *f.size) for f in xs]
    with torch.no_grad():
        y = module(*inputs)
    ys = y if isinstance(y, tuple) else (y,)
    return [Feature(t.shape[1], tuple(t.shape[2:])) for t in ys], y is inputs[0]


@lru_cache(maxsize=256)
def _runnable(make: Callable[..., Any], *args: Any) -> Any:
    """``make(*args)`` in uninitialised CPU memory (built on the meta device: no initialisation)."""
    import torch

    with torch.device("meta"):
        module = make(*args)
    return module.to_empty(device="cpu").eval()


@cache
def _trace_op(make: Callable[..., Any], x: Feature, c_out: int, stride: int, sep_repeats: int
              ) -> tuple[Feature | None, bool]:
    """The op's output on ``x`` (None where it cannot run there) and whether it is ``x`` itself."""
    try:
        (out,), identity = _shapes(_runnable(make, x.channels, c_out, stride, sep_repeats), x)
    except (RuntimeError, ValueError):  # e.g. a pooling window larger than a 1x1 map
        return None, False
    return out, identity


@cache
def _builds_alike(make: Callable[..., Any], c_in: int, c_out: int, stride: int, sep_repeats: int) -> bool:
    """Whether the op's module at ``stride`` is the one it builds at stride 1, as torch prints it."""
    at_one, at_stride = (_runnable(make, c_in, c_out, s, sep_repeats) for s in (1, stride))
    return repr(at_one) == repr(at_stride)


# A merge is cut into adapt convs (to its output channels), resizes (to its output size) and the merge at
# (channels, size): the table models its output channels as set by its inputs' channels and its output size
# by their sizes. So the channels are the module's own ``channels`` (what the decoder wires the next step
# with) and the size is traced once per pair of sizes on PROBE_CHANNELS-channel inputs: ~10^2 runs where one
# per channels-and-sizes would be ~10^4 (a second or more for enumerate_units).
PROBE_CHANNELS = 8


@cache
def _merge_channels(make: Callable[..., Any], c_a: int, c_b: int, shrink: bool) -> int:
    import torch

    with torch.device("meta"):  # attributes only: nothing to allocate or initialise
        return make(c_a, c_b, shrink).channels


@cache
def _merge_size(make: Callable[..., Any], size_a: Size, size_b: Size, shrink: bool) -> Size:
    c = PROBE_CHANNELS
    (out,), _ = _shapes(_runnable(make, c, c, shrink), Feature(c, size_a), Feature(c, size_b))
    return out.size


def _trace_merge(make: Callable[..., Any], a: Feature, b: Feature, shrink: bool) -> Feature:
    return Feature(_merge_channels(make, a.channels, b.channels, shrink), _merge_size(make, a.size, b.size, shrink))


@lru_cache(maxsize=16)
def _trace_encoder(padding: str, input_size: Size) -> tuple[Feature, Feature]:
    from segfactory.factory.encoder import Encoder

    (e0, e1), _ = _shapes(_runnable(Encoder, padding), Feature(3, input_size))
    return e0, e1


def encoder_features(config: ModelConfig, input_size: Size) -> tuple[Feature, Feature]:
    """(E0, E1) of the encoder at ``input_size``, as the encoder computes them."""
    return _trace_encoder(config.encoder_padding, tuple(input_size))


class UnitCutter:
    """Realises each step of the wiring by emitting its units' signatures (a ``factory.decoder.Realiser``)."""

    def __init__(self, emit: Emit, config: ModelConfig, input_size: Size) -> None:
        self.emit, self.config, self.input_size = emit, config, tuple(input_size)

    def op(self, step: OpStep) -> Feature:
        out, sig = _op_unit(step.op, step.x, step.c_out, step.stride, self.config.sep_repeats)
        if out is None:
            c, (h, w) = step.x
            raise InputError(f"op {step.op!r} of layer {step.layer} cannot run on a {c}x{h}x{w} input at stride "
                             f"{step.stride}: the genotype does not fit the input size {fmt(self.input_size)}")
        if sig:
            self.emit(sig)
        return out

    def merge(self, step: MergeStep) -> Feature:
        out, sigs = _merge_units(step.merge, step.a, step.b, step.shrink)
        for sig in sigs:
            self.emit(sig)
        return out

    def collect(self, step: CollectStep) -> None:
        for c, s in (step.out, step.x):
            if s != step.y.size:
                self.emit(f"resize|{c}|{fmt(s)}>{fmt(step.y.size)}")
        self.emit(f"concat|{step.out.channels},{step.x.channels}|{fmt(step.y.size)}")

    def head(self, step: HeadStep) -> None:
        self.emit(f"head|{step.x.channels}|{fmt(step.x.size)}")
        if step.x.size != self.input_size:
            self.emit(f"upsample|{self.config.num_classes}|{fmt(step.x.size)}>{fmt(self.input_size)}")


def _op_unit(op: str, x: Feature, c_out: int, stride: int, sep_repeats: int
             ) -> tuple[Feature | None, str | None]:
    """The output of op ``op`` on ``x`` (None: it cannot run there) and its unit's signature (None: the op
    returns its input, no cost)."""
    make = get_op(op)
    out, identity = _trace_op(make, x, c_out, stride, sep_repeats)
    if out is None or identity:
        return out, None
    # A module the stride does not enter (a global pool, a channel tile) is one unit for both strides.
    if stride != 1 and _builds_alike(make, x.channels, c_out, stride, sep_repeats) and (
            _trace_op(make, x, c_out, 1, sep_repeats)[0] == out):
        stride = 1
    return out, f"op|{op}|{x.channels}>{c_out}|s{stride}|{fmt(x.size)}"


def _merge_units(merge: str, a: Feature, b: Feature, shrink: bool) -> tuple[Feature, tuple[str, ...]]:
    """The merged feature and the units of a merge: adapt convs, resizes, then the merge on aligned inputs."""
    out = _trace_merge(get_merge(merge), a, b, shrink)
    sigs = [f"adapt|{f.channels}>{out.channels}|{fmt(f.size)}" for f in (a, b) if f.channels != out.channels]
    sigs += [f"resize|{out.channels}|{fmt(f.size)}>{fmt(out.size)}" for f in (a, b) if f.size != out.size]
    return out, (*sigs, f"{merge}|{out.channels}|{fmt(out.size)}")


def model_units(genotype: Genotype, config: ModelConfig, input_size: Size) -> list[str]:
    """The units of ``build_model(genotype, config)`` at ``input_size`` (batch 1), in execution order."""
    units: list[str] = [f"encoder|{config.encoder_padding}|{fmt(input_size)}"]
    walk_decoder(genotype, encoder_features(config, input_size), UnitCutter(units.append, config, input_size))
    return units


# ---- every unit of the search space -----------------------------------------------------------------------
Groups = tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]  # candidates for op_a, op_b, merge


class _Split(Exception):
    """Members of a group part ways at a step: walk each part (the groups, refined) on its own."""

    def __init__(self, parts: list[Groups]) -> None:
        super().__init__()
        self.parts = parts


class _GroupCutter(UnitCutter):
    """Cuts a step for every op (merge) of the walked group at once, raising :class:`_Split` where they differ.

    A layer's template is fixed across its repeats, so a group stays together only while all its members
    move every state alike; the walk then follows one state for the whole group.
    """

    groups: Groups = ((), (), ())

    def __init__(self, emit: Emit, config: ModelConfig, input_size: Size) -> None:
        super().__init__(emit, config, input_size)
        # (group, step) -> {output: members giving it}; a step seen before has emitted its units already
        self.memo: dict[tuple, dict[Feature, tuple[str, ...]]] = {}
        self.collected: dict[tuple[Feature, Feature], Feature] = {}

    def _apply(self, which: int, key: tuple, run: Callable[[str], tuple[Feature, Iterable[str]]]) -> Feature:
        group = self.groups[which]
        by_out = self.memo.get((group, *key))
        if by_out is None:
            by_out = self.memo[(group, *key)] = {}
            for name in group:
                out, sigs = run(name)
                by_out[out] = (*by_out.get(out, ()), name)
                for sig in sigs:
                    self.emit(sig)  # every member runs this step, whether or not the group splits here
        if len(by_out) > 1 or None in by_out:
            parts = []
            for out, names in by_out.items():
                if out is not None:  # members that cannot run here end the chain: no genotype gets further
                    groups = list(self.groups)
                    groups[which] = names
                    parts.append(tuple(groups))
            raise _Split(parts)
        return next(iter(by_out))

    def collect_once(self, out: Feature, x: Feature) -> Feature:
        """Cut the concatenation of ``out`` and ``x`` unless done before; return the concatenated state."""
        y = self.collected.get((out, x))
        if y is None:
            step = collect_step(out, x)
            self.collect(step)
            y = self.collected[out, x] = step.y
        return y

    def op(self, step: OpStep) -> Feature:
        def run(name: str) -> tuple[Feature, Iterable[str]]:
            out, sig = _op_unit(name, step.x, step.c_out, step.stride, self.config.sep_repeats)
            return out, (sig,) if sig else ()

        return self._apply(0 if step.branch == "a" else 1, ("op", step.x, step.c_out, step.stride), run)

    def merge(self, step: MergeStep) -> Feature:
        return self._apply(2, ("merge", step.a, step.b, step.shrink),
                           lambda name: _merge_units(name, step.a, step.b, step.shrink))


def _layer_outputs(cut: _GroupCutter, layer: int, stride: int, inputs: list[Feature], everything: Groups
                   ) -> set[Feature]:
    """Every output of ``layer`` at ``stride`` over inputs from ``inputs``, for any template and repeats."""
    outs: set[Feature] = set()
    frontier = {(everything, a, b) for a in inputs for b in inputs}
    for r in range(MAX_REPEATS):
        nxt = set()
        work = list(frontier)
        while work:
            groups, a, b = work.pop()
            cut.groups = groups
            # the walk names one member of each group; the cutter cuts the step for all of them
            template = Template(groups[0][0], groups[1][0], groups[2][0])
            try:
                a2, y = walk_repeat(layer, r, template, stride, a, b, cut)
            except _Split as split:
                work += [(part, a, b) for part in split.parts]
                continue
            outs.add(y)  # the layer's output with r + 1 repeats
            nxt.add((groups, a2, y))
        frontier = nxt
    return outs


def enumerate_units(config: ModelConfig, input_size: Size) -> list[str]:
    """Every unit signature some genotype produces under ``config`` at ``input_size``, sorted.

    Layer by layer, the inputs range over every state reachable in the pool so far; within a layer the
    template is held fixed across repeats (as in a genotype), ops and merges that move a state alike being
    walked together. The collection of loose ends is a walk over reachable (channels, size) running states.
    """
    units: set[str] = set()
    input_size = tuple(input_size)
    units.add(f"encoder|{config.encoder_padding}|{fmt(input_size)}")
    cut = _GroupCutter(units.add, config, input_size)
    # read at call time: the names a genotype admits are the ops and merges that can appear
    ops, merges = tuple(genotypes.OP_NAMES), tuple(genotypes.MERGE_NAMES)
    reachable: set[Feature] = set(encoder_features(config, input_size))
    layer_outputs: list[set[Feature]] = []
    for l in range(NUM_LAYERS):
        inputs = sorted(reachable)
        outs: set[Feature] = set()
        for stride in (1, 2) if l < STRIDED_LAYERS else (1,):
            outs |= _layer_outputs(cut, l, stride, inputs, (ops, ops, merges))
        layer_outputs.append(outs)
        reachable |= outs
    # Collection: the last layer is always collected; earlier layer outputs may be (in pool order).
    running: set[Feature] = set()
    for l, outs in enumerate(layer_outputs):
        new = set(outs) if l < NUM_LAYERS - 1 else set()
        for out in running:
            for x in outs:
                new.add(cut.collect_once(out, x))
        if l == NUM_LAYERS - 1:
            new |= outs  # the last layer alone
            final = new
        running |= new
    for state in final:
        cut.head(HeadStep(state))
    return sorted(units)


def unit_kind(sig: str) -> str:
    return sig.split("|", 1)[0]


def count_by_kind(sigs: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in sigs:
        counts[unit_kind(s)] = counts.get(unit_kind(s), 0) + 1
    return counts
