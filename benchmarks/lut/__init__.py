"""segfactory.benchmarks.lut: latency lookup tables (FBNet/OFA style) and the whole-model predictor fitted on them.

- ``units``: the units a model is cut into, derived from the decoder's own wiring (``factory.decoder.walk_decoder``),
  so a new op appears in tables without table code; every unit the search space can produce;
- ``table``: ``lut.json``, its entries and the fitted predictor; ``predictor``, ``graph`` and ``protocol``: the
  predictor's forms, whole-graph features and the genotype sets and protocol whole models are measured with;
- ``measure`` (units in ONNX bags, profiled per node), ``slow`` (entries measured while the host ran slow),
  ``profile`` (``segfactory profile``), ``remote`` (``profile --device-url``: a table measured on a device agent).
"""
