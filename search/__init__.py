"""segfactory.search: the decoder search (propose, check the cost, proxy-train, reward, learn, record), resumable.

- ``options`` (``SearchOptions``: every flag declared once) and ``cli`` (the command, built from it);
- ``loop`` (``run_search``), ``context`` (what a run resolves once; ``run.json``), ``state``, ``trials``
  (``trials.jsonl``), ``results`` and ``report`` (``best.json``, ``pareto.png``, ``summary.md``), ``pick``;
- ``strategies`` (the strategy registry: ppo, random, evolution, list), ``controller`` and ``ppo`` (the paper's
  LSTM controller and its update);
- ``presets``, ``proxy_data`` and ``proxy`` (proxy training), ``early_stop``, ``reward`` (a pure function);
- ``executors`` (the executor protocol; local) and ``ray_executor`` (Ray).

Imports factory, export and benchmarks.
"""
