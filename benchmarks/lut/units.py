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

:func:`model_units` walks one genotype exactly as ``TemplateDecoder`` builds it; :func:`enumerate_units`
walks the same construction over sets of reachable (channels, size) states instead of one genotype, so it
covers every unit any of the ~1e23 genotypes can produce at that input size without enumerating them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from segfactory.factory.config import ModelConfig
from segfactory.factory.genotype import (
    MAX_REPEATS,
    MERGE_NAMES,
    NUM_LAYERS,
    OP_NAMES,
    STRIDED_LAYERS,
    Genotype,
)

Size = tuple[int, int]
State = tuple[int, Size]  # (channels, (H, W)) of a feature map at batch 1
Emit = Callable[[str], None]

ENCODER_CHANNELS = (24, 32)


def half(s: Size) -> Size:
    """Output size of a stride-2 conv/pool with 'same' padding: ceil(H/2) x ceil(W/2)."""
    return ((s[0] + 1) // 2, (s[1] + 1) // 2)


def fmt(s: Size) -> str:
    return f"{s[0]}x{s[1]}"


def encoder_states(input_size: Size) -> tuple[State, State]:
    e0 = half(half(input_size))
    return (ENCODER_CHANNELS[0], e0), (ENCODER_CHANNELS[1], half(e0))


def op_unit(emit: Emit, op: str, c_in: int, c_out: int, stride: int, s: Size, sep_repeats: int) -> State:
    """Emit the unit of one branch op; return its output state (mirrors factory/ops.py)."""
    if op == "skip_connect":
        if c_out != c_in:  # a channel tile; identity otherwise (no unit, no cost)
            emit(f"op|{op}|{c_in}>{c_out}|s1|{fmt(s)}")
        return c_out, s
    if op == "global_average_pool":
        emit(f"op|{op}|{c_in}>{c_out}|s1|{fmt(s)}")
        return c_out, s
    emit(f"op|{op}|{c_in}>{c_out}|s{stride}|{fmt(s)}")
    out = s
    if stride == 2:
        for _ in range(1 if op == "max_pool_3x3" else sep_repeats):
            out = half(out)
    return c_out, out


def merge_unit(emit: Emit, merge: str, a: State, b: State, shrink: bool) -> State:
    """Emit a merge's adapt convs, resizes and the merge itself; return the merged state."""
    c = max(a[0], b[0])
    for ch, s in (a, b):
        if ch != c:
            emit(f"adapt|{ch}>{c}|{fmt(s)}")
    target = min(a[1], b[1]) if shrink else max(a[1], b[1])
    for _, s in (a, b):
        if s != target:
            emit(f"resize|{c}|{fmt(s)}>{fmt(target)}")
    emit(f"{merge}|{c}|{fmt(target)}")
    return c, target


def layer_units(emit: Emit, template: tuple[str, str, str], a: State, b: State, repeats: int, stride: int,
                layer: int, sep_repeats: int) -> State:
    """One decoder layer: ``repeats`` steps of y = merge(op_a(a), op_b(b)), then a <- b, b <- y."""
    op_a, op_b, merge = template
    shrink = layer < STRIDED_LAYERS
    for r in range(repeats):
        grow = stride if r == 0 else 1
        ya = op_unit(emit, op_a, a[0], a[0] * grow, stride, a[1], sep_repeats)
        yb = op_unit(emit, op_b, b[0], b[0] * grow, stride, b[1], sep_repeats)
        a, b = b, merge_unit(emit, merge, ya, yb, shrink)
    return b


def collect_step(emit: Emit, out: State, x: State) -> State:
    """Concatenate the running collection ``out`` with loose end ``x`` at the larger size."""
    size = max(out[1], x[1])
    for c, s in (out, x):
        if s != size:
            emit(f"resize|{c}|{fmt(s)}>{fmt(size)}")
    emit(f"concat|{out[0]},{x[0]}|{fmt(size)}")
    return out[0] + x[0], size


def tail_units(emit: Emit, collected: State, config: ModelConfig, input_size: Size) -> None:
    emit(f"head|{collected[0]}|{fmt(collected[1])}")
    if collected[1] != tuple(input_size):
        emit(f"upsample|{config.num_classes}|{fmt(collected[1])}>{fmt(input_size)}")


def model_units(genotype: Genotype, config: ModelConfig, input_size: Size) -> list[str]:
    """The units of ``build_model(genotype, config)`` at ``input_size`` (batch 1), in execution order."""
    units: list[str] = []
    emit = units.append
    emit(f"encoder|{config.encoder_padding}|{fmt(input_size)}")
    pool: list[State] = list(encoder_states(tuple(input_size)))
    for l, spec in enumerate(genotype.layers):
        t = genotype.templates[spec.template]
        pool.append(layer_units(emit, (t.op_a, t.op_b, t.merge), pool[spec.input_1], pool[spec.input_2],
                                spec.repeats, spec.stride, l, config.sep_repeats))
    collected = genotype.collected()
    out = pool[collected[0]]
    for i in collected[1:]:
        out = collect_step(emit, out, pool[i])
    tail_units(emit, out, config, tuple(input_size))
    return units


def enumerate_units(config: ModelConfig, input_size: Size) -> list[str]:
    """Every unit signature some genotype produces under ``config`` at ``input_size``, sorted.

    Layer by layer, the inputs range over every state reachable in the pool so far; within a layer the
    template is held fixed across repeats (as in a genotype), so each (template, a, b) chain is walked once.
    The collection of loose ends is a walk over reachable (channels, size) running states.
    """
    units: set[str] = set()
    emit = units.add
    input_size = tuple(input_size)
    emit(f"encoder|{config.encoder_padding}|{fmt(input_size)}")
    reachable: set[State] = set(encoder_states(input_size))
    layer_outputs: list[set[State]] = []
    # Ops of one class move a state alike (sep ops halve per unit, max-pool once, the others never), and the
    # merged state does not depend on the merge kind: walk chains per class pair, emit every op and merge.
    classes = [[o for o in OP_NAMES if _op_class(o) == k] for k in ("sep", "pool", "keep")]
    memo: dict[tuple, State] = {}
    for l in range(NUM_LAYERS):
        outs: set[State] = set()
        strides = (1, 2) if l < STRIDED_LAYERS else (1,)
        states = sorted(reachable)
        for ops_a in classes:
            for ops_b in classes:
                for stride in strides:
                    frontier = {(a, b) for a in states for b in states}
                    for r in range(MAX_REPEATS):
                        nxt = set()
                        grow = stride if r == 0 else 1
                        for a, b in frontier:
                            # a step's units and result depend only on this key: earlier layers did most
                            key = (id(ops_a), id(ops_b), stride, grow, l < STRIDED_LAYERS, a, b)
                            y = memo.get(key)
                            if y is None:
                                # every op of a class emits its unit; all of them give the same state
                                for o in ops_a:
                                    ya = op_unit(emit, o, a[0], a[0] * grow, stride, a[1], config.sep_repeats)
                                for o in ops_b:
                                    yb = op_unit(emit, o, b[0], b[0] * grow, stride, b[1], config.sep_repeats)
                                for merge in MERGE_NAMES:
                                    y = merge_unit(emit, merge, ya, yb, l < STRIDED_LAYERS)
                                memo[key] = y
                            outs.add(y)
                            nxt.add((b, y))
                        frontier = nxt
        layer_outputs.append(outs)
        reachable |= outs
    # Collection: the last layer is always collected; earlier layer outputs may be (in pool order).
    running: set[State] = set()
    for l, outs in enumerate(layer_outputs):
        new = set(outs) if l < NUM_LAYERS - 1 else set()
        for out in running:
            for x in outs:
                new.add(collect_step(emit, out, x))
        if l == NUM_LAYERS - 1:
            new |= outs  # the last layer alone
            final = new
        running |= new
    for state in final:
        tail_units(emit, state, config, input_size)
    return sorted(units)


def _op_class(op: str) -> str:
    if op.startswith("sep_conv"):
        return "sep"
    return "pool" if op == "max_pool_3x3" else "keep"


def unit_kind(sig: str) -> str:
    return sig.split("|", 1)[0]


def count_by_kind(sigs: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in sigs:
        counts[unit_kind(s)] = counts.get(unit_kind(s), 0) + 1
    return counts
