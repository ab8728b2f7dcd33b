"""segfactory.factory: genotype, model configuration, ops, encoder, decoder, ``build_model``, data, training.

Importing this package is cheap and imports no torch: the device agent (which has no torch) imports the CLI
through it. Import submodules (``segfactory.factory.model``) for the heavy parts.
"""

from segfactory.factory._version import __version__

__all__ = ["__version__"]
