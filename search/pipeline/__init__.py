"""``segfactory build``: from a dataset to a deployable, verified model in one command.

Stages, each writing its outputs atomically into the build directory and recorded in ``build.json`` when done, so
that ``--resume`` continues at the first unfinished one (a kill loses at most the unit in progress):

    search -> pick -> train -> export -> check -> evaluate -> bench -> report

- :mod:`.options`: :class:`BuildOptions`, the search's options (declared once in search/options.py) plus the build's;
- :mod:`.checks`: :func:`check_build`, every input checked before the build directory is created;
- :mod:`.state`: the build directory, ``build.json`` and ``STAGES``, the stage registry (name ->
  "module:function", run in registration order; :func:`stage_function`);
- :mod:`.stages`: search, pick (and the deployed configuration), train (every recipe, the better one kept);
- :mod:`.deploy`: export (each precision, parity-gated), check (the latency limit still holds), evaluate
  (val), bench;
- :mod:`.reuse`: ``--baselines-from``, an earlier build's baselines (trainings, exports, val figures) reused;
- :mod:`.report` and :mod:`.plots`: ``report.md`` and a self-contained ``report.html`` with the plots;
- :mod:`.run`: :func:`run_build`, the pipeline with one live progress view;
- :mod:`.cli`: the command.
"""
