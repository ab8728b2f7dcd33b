"""segfactory.export: a built model to deployable files, each checked, each with a model card.

- ``api`` (``export_model``: what ``segfactory export`` runs) and ``cli`` (the thin command);
- ``onnx`` (one self-contained ONNX file), ``parity`` (ONNX Runtime against PyTorch), ``precision`` (FP16 and
  INT8 Q/DQ graphs), ``card`` (the model card ``FILE.json`` beside every artefact);
- ``tensorrt`` (engine building and ``EngineSession``, the one TensorRT execution path, which benchmarks'
  TensorRT runner also uses), ``cuda_buffers`` (its device memory);
- ``predictor`` (``OnnxPredictor``, for ``eval --model``) and ``eval_cli`` (``segfactory eval``).

Imports factory only; tensorrt, onnxruntime and onnx are imported where used.
"""
