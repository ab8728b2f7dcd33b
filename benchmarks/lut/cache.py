"""This host's lookup tables: where ``segfactory profile --target cpu`` keeps one by default, and how a search
finds the one made here for its configuration (to screen candidates under a latency limit before timing them).

A table is this host's when it was measured on this CPU (model name and core count), with this ONNX Runtime
version and thread count, at the search's input size and model configuration, and is complete with its fitted
predictor. The folder is ``$SEGFACTORY_CACHE/lut`` (default ``~/.cache/segfactory/lut``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from segfactory.factory.errors import InputError

CACHE_ENV = "SEGFACTORY_CACHE"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "segfactory") / "lut"


def host_table_path(input_size: tuple[int, int], threads: int, config: Any) -> Path:
    """Where this host's table for ``config`` at ``input_size`` and ``threads`` lives."""
    from segfactory.benchmarks.runners import cpu_description

    host = re.sub(r"[^a-z0-9]+", "-", cpu_description().lower()).strip("-")
    return cache_dir() / (f"cpu_{host}_{input_size[0]}x{input_size[1]}_t{threads}_c{config.num_classes}"
                          f"_a{config.agg_size}_s{config.sep_repeats}_{config.encoder_padding}.json")


def find_host_table(config: Any, input_size: tuple[int, int], threads: int) -> tuple[Any, str]:
    """(this host's table for the configuration, or None; why not, when None)."""
    import onnxruntime as ort
    from segfactory.benchmarks.lut.table import Lut
    from segfactory.benchmarks.runners import cpu_description

    path = host_table_path(input_size, threads, config)
    if not path.is_file():
        return None, f"no table of this host at {path} (make one with `segfactory profile --target cpu`)"
    try:
        lut = Lut.load(path)
        lut.check(config, input_size, threads=threads, backend="ort")
    except InputError as e:
        return None, str(e)
    data = lut.data
    if data.get("device") != cpu_description() or data.get("backend_version") != ort.__version__:
        return None, (f"{path} was measured on {data.get('device')} with onnxruntime {data.get('backend_version')}, "
                      f"not this host's {cpu_description()} with {ort.__version__}")
    if not data.get("predictor") or data.get("units_total") != len(lut.entries):
        return None, f"{path} is incomplete: run `segfactory profile --target cpu` again to finish it"
    return lut, ""
