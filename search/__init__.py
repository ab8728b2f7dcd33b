"""segfactory.search: the decoder search (propose, check the cost, proxy-train, reward, learn, record), resumable.

- ``options`` (``SearchOptions``: every flag declared once) and ``cli`` (the command and ``search pick``,
  their flags built from it);
- ``loop`` (``run_search``), ``context`` (what a run resolves once, every input checked before ``--out`` is
  created; ``run.json``), ``state``, ``trials`` (``trials.jsonl``), ``results`` and ``report`` (``best.json``,
  ``pareto.png``, ``summary.md``), ``pick``;
- ``limits`` (``Limits``: the hard limits, parsed once, for the search, ``search pick`` and the build);
- ``strategies`` (the strategy registry: ppo, random, evolution, list), ``controller`` and ``ppo`` (the paper's
  LSTM controller and its update);
- ``presets`` (the preset registry and ``ProxySettings``), ``proxy_data`` and ``proxy`` (proxy training),
  ``early_stop``, ``reward`` (a pure function);
- ``executors`` (the executor protocol; local) and ``ray_executor`` (Ray);
- ``pipeline/``: ``segfactory build`` (its docstring lists its modules).

Imports factory, export and benchmarks.
"""
