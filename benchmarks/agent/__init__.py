"""segfactory.benchmarks.agent: the device agent and its client.

The agent (also shipped alone, without torch, as the segfactory-agent distribution: ``agent/pyproject.toml``):
``cli`` (``segfactory agent serve``), ``entry`` (that distribution's root command), ``config`` and ``limits``
(how it serves, and its bounds on a request), ``server`` (HTTP), ``cache`` (results by model and settings),
``onnx_check`` (validation of uploads), ``settings`` (measurement settings and the protocol version),
``backends`` and ``worker`` (the measuring process), ``_http``.

The client, used by search, bench and profile: ``client``, ``options`` (``--device-url`` and
``--device-token-file``, declared once), ``remote_bench`` (``bench --device-url``).

Nothing here imports torch at import time: the agent runs on a Jetson without it.
"""
