"""What ``segfactory build`` takes: the search's options (SearchOptions, declared once) and the build's own."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from segfactory.factory.config import RELEASED, SEARCH_PROXY
from segfactory.factory.errors import InputError
from segfactory.factory.training.recipes import BUILD_RECIPES, RECIPES
from segfactory.search.options import SearchOptions

PRECISIONS = ("fp32", "fp16", "int8")
PAPER_MODEL, PEER_MODEL = "arch0", "lraspp_mobilenet_v3_large"  # a zoo name and a factory.reference name
REFERENCE_MODELS = (PAPER_MODEL, PEER_MODEL)  # what a user would pick instead (--baselines)
# deployed configurations (agg_size, sep_repeats) the build may give the picked genotype: the highest-capacity
# one whose latency stays within the limit is chosen (measured beside arch0), the searched one first
DEPLOY_CONFIGS = tuple(dict.fromkeys((
    (RELEASED.agg_size, RELEASED.sep_repeats), (RELEASED.agg_size, 1),
    (SEARCH_PROXY.agg_size, SEARCH_PROXY.sep_repeats), (32, 1), (16, 1))))  # narrower heads after the proxy's
DEFAULT_BUDGET = 8
DEFAULT_EPOCHS = 30


@dataclass
class BuildOptions:
    """A build. ``search`` holds the search's options (its ``out`` is set by the build)."""

    out: str
    search: SearchOptions = field(default_factory=SearchOptions)
    search_minutes: float | None = None  # or search.budget candidates
    train_minutes: float | None = None  # or epochs
    epochs: int | None = None
    precisions: tuple[str, ...] = ("fp32", "int8")
    from_search: str | None = None  # reuse a finished search
    baselines: bool = False  # also train arch0 and LR-ASPP with the same minutes, data and recipes
    baselines_from: str | None = None  # an earlier build whose baselines are reused (implies baselines)
    recipes: tuple[str, ...] = BUILD_RECIPES
    train_set: dict[str, Any] = field(default_factory=dict)  # recipe overrides for every training (tests: crop)
    val_every: int | None = None  # None: every epoch for --epochs, every 2nd for --train-minutes
    train_threads: int | None = None  # torch threads while training (None: torch's default)
    workers: int = 1  # loader processes while training
    deploy_configs: tuple[tuple[int, int], ...] = DEPLOY_CONFIGS

    def __post_init__(self) -> None:
        self.precisions = tuple(self.precisions)
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad or not self.precisions:
            raise InputError(f"--precision {','.join(self.precisions)}: each must be one of {', '.join(PRECISIONS)}")
        if "fp32" not in self.precisions:
            self.precisions = ("fp32", *self.precisions)  # the headline, and the parity gate of the others
        if self.train_minutes is not None and self.epochs is not None:
            raise InputError("give --train-minutes or --epochs, not both")
        if self.train_minutes is None and self.epochs is None:
            self.epochs = DEFAULT_EPOCHS
        if not self.recipes:
            raise InputError("--recipes names no recipe (one or more of "
                             f"{', '.join(RECIPES.names())}, comma-separated)")
        for r in self.recipes:
            if r not in RECIPES:
                raise InputError(f"unknown recipe {r!r} (one of {', '.join(RECIPES.names())})")
        if self.search_minutes is not None and self.from_search is not None:
            raise InputError("--search-minutes and --from-search exclude each other: the search is done")
        if self.baselines_from is not None:
            from pathlib import Path

            self.baselines_from = str(Path(self.baselines_from).resolve())  # a resume elsewhere compares the same
            self.baselines = True
        self.search.out = ""  # set per build directory

    @property
    def budget_text(self) -> str:
        if self.search_minutes is not None:
            return f"{self.search_minutes:g} min of search"
        return f"{self.search.budget} candidates"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["search"] = self.search.to_dict()
        d["precisions"] = list(self.precisions)
        d["recipes"] = list(self.recipes)
        d["deploy_configs"] = [list(c) for c in self.deploy_configs]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BuildOptions:
        d = dict(d)
        d["search"] = SearchOptions.from_dict(d["search"])
        d["precisions"] = tuple(d["precisions"])
        d["recipes"] = tuple(d["recipes"])
        d["deploy_configs"] = tuple(tuple(c) for c in d["deploy_configs"])
        return cls(**d)


# Settings a resumed build may change: how the work is done, not what it computes
RUNTIME_FIELDS = ("out", "train_threads", "workers", "search_minutes")
