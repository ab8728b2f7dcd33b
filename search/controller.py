"""The controller: a 2-layer LSTM policy over the 44 decisions of a genotype (method.md §3).

Step schedule: 2 warm-up LSTM steps (outputs discarded), then one step per decision in the order of
:meth:`Genotype.to_actions` (9 template decisions, then per layer ``p1, p2, t, k, s``). Heads read the current
step's top-layer output: one op head shared by every template slot, one merge head, one position head per (layer,
slot), shared template / repeat / stride heads, and a single-choice dummy stride head for layers 3..6.

By default the next step's input is the previous step's output, as upstream: the logits then do not depend on
earlier samples and the policy is a product of 44 independent categoricals. ``feedback=True`` feeds an embedding of
the sampled action instead (ENAS style), so later decisions can depend on earlier ones.
"""

from __future__ import annotations

import torch
from segfactory.factory.genotype import (
    MAX_REPEATS,
    MERGE_NAMES,
    NUM_ENCODER_INPUTS,
    NUM_LAYERS,
    NUM_TEMPLATES,
    OP_NAMES,
    STRIDED_LAYERS,
    action_space,
)
from torch import Tensor, nn

HIDDEN = 100
NUM_LSTM_LAYERS = 2
WARMUP_STEPS = NUM_ENCODER_INPUTS  # one per encoder output
INIT_RANGE = 0.1


def decision_heads() -> list[str]:
    """Name of the head that emits each of the 44 decisions, in order."""
    names = ["op", "op", "merge"] * NUM_TEMPLATES
    for l in range(NUM_LAYERS):
        names += [f"pos{l}_0", f"pos{l}_1", "template", "repeats", "stride" if l < STRIDED_LAYERS else "stride_dummy"]
    return names


class Controller(nn.Module):
    """LSTM policy; ``sample`` draws a 44-action sequence, ``evaluate`` scores given ones (teacher forcing)."""

    def __init__(self, feedback: bool = False, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.feedback = feedback
        self.hidden = hidden
        self.lstm = nn.LSTM(hidden, hidden, NUM_LSTM_LAYERS)
        self.g_emb = nn.Parameter(torch.zeros(1, 1, hidden))
        sizes = {"op": len(OP_NAMES), "merge": len(MERGE_NAMES), "template": NUM_TEMPLATES,
                 "repeats": MAX_REPEATS, "stride": 2, "stride_dummy": 1}
        for l in range(NUM_LAYERS):
            for slot in range(2):
                sizes[f"pos{l}_{slot}"] = NUM_ENCODER_INPUTS + l
        self.heads = nn.ModuleDict({name: nn.Linear(hidden, n) for name, n in sizes.items()})
        self.order = decision_heads()
        self.sizes = action_space()
        if feedback:
            # One embedding table per head: an action's meaning depends on which decision it answers.
            self.embeddings = nn.ModuleDict({name: nn.Embedding(n, hidden) for name, n in sizes.items()})
        for p in self.parameters():
            nn.init.uniform_(p, -INIT_RANGE, INIT_RANGE)

    def _run(self, actions: Tensor | None, batch: int, generator: torch.Generator | None):
        """Walk the 46 steps. ``actions`` (B, 44) teacher-forces; None samples. Returns (actions, logp, entropy)."""
        device = self.g_emb.device
        inp = self.g_emb.expand(1, batch, self.hidden)
        state = None
        for _ in range(WARMUP_STEPS):
            out, state = self.lstm(inp, state)
            inp = out
        chosen, logps, ents = [], [], []
        for i, head in enumerate(self.order):
            out, state = self.lstm(inp, state)  # (1, B, hidden)
            logits = self.heads[head](out[0])  # (B, n_i)
            log_probs = torch.log_softmax(logits, dim=-1)
            if actions is None:
                with torch.no_grad():
                    a = torch.multinomial(log_probs.exp(), 1, generator=generator).squeeze(1)
            else:
                a = actions[:, i].to(device)
            chosen.append(a)
            logps.append(log_probs.gather(1, a[:, None]).squeeze(1))
            ents.append(-(log_probs.exp() * log_probs).sum(-1))
            inp = self.embeddings[head](a)[None] if self.feedback else out
        return torch.stack(chosen, 1), torch.stack(logps, 1).sum(1), torch.stack(ents, 1).sum(1)

    def sample(self, generator: torch.Generator | None = None) -> tuple[list[int], float, float]:
        """One action sequence with its summed log-probability and entropy (no gradient)."""
        with torch.no_grad():
            actions, logp, ent = self._run(None, 1, generator)
        return [int(a) for a in actions[0]], float(logp[0]), float(ent[0])

    def evaluate(self, actions: Tensor) -> tuple[Tensor, Tensor]:
        """Log-probabilities (B,) and entropies (B,) of ``actions`` (B, 44) under the current policy."""
        actions = torch.as_tensor(actions, dtype=torch.long)
        if actions.dim() == 1:
            actions = actions[None]
        if not self.feedback:
            return self._factorised(actions)  # the LSTM trajectory is shared by every sequence: run it once
        _, logp, ent = self._run(actions, actions.shape[0], None)
        return logp, ent

    def _factorised(self, actions: Tensor) -> tuple[Tensor, Tensor]:
        inp = self.g_emb
        state = None
        for _ in range(WARMUP_STEPS):
            inp, state = self.lstm(inp, state)
        logps, ents = [], []
        for i, head in enumerate(self.order):
            out, state = self.lstm(inp, state)
            log_probs = torch.log_softmax(self.heads[head](out[0]), dim=-1)  # (1, n_i)
            logps.append(log_probs[0, actions[:, i]])  # (B,)
            ents.append(-(log_probs.exp() * log_probs).sum(-1).expand(actions.shape[0]))
            inp = out
        return torch.stack(logps, 1).sum(1), torch.stack(ents, 1).sum(1)

    def marginals(self) -> list[Tensor]:
        """Per-decision probability vectors of the factorised policy (``feedback=False`` only)."""
        if self.feedback:
            raise ValueError("with action feedback the decisions have no fixed marginals")
        with torch.no_grad():
            inp, state = self.g_emb, None
            for _ in range(WARMUP_STEPS):
                inp, state = self.lstm(inp, state)
            probs = []
            for head in self.order:
                inp, state = self.lstm(inp, state)
                probs.append(torch.softmax(self.heads[head](inp[0]), -1)[0])
        return probs

    def max_entropy(self) -> float:
        """Entropy of the uniform policy over the 44 decisions (nats)."""
        import math

        return sum(math.log(n) for n in self.sizes)
