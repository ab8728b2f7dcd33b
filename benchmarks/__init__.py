"""segfactory.benchmarks: latency, measured the way trtexec does, and where each target's latency comes from.

- ``runners`` (one protocol, context managers, over torch and ONNX Runtime), ``trt_runner`` (TensorRT, over
  export's ``EngineSession``), ``trtexec``, ``harness`` (the one timing loop), ``stats``, ``models`` (what is
  timed, and the runner registry), ``bench`` and ``cli`` (``segfactory bench`` and ``profile``);
- ``targets`` (the target registry: measured, lookup table or estimated; what a target can do is its class'
  attributes, read through ``target_class``), ``roofline`` (the estimate);
- ``lut/``: latency lookup tables; ``agent/``: the device agent (torch-free) and its client.

Not installed: ``scripts/`` (the measuring scripts, which may import every package); what they write is in
``results/`` at the repository root (``scripts/_common.py``: ``RESULTS``). Imports factory and export.
"""
