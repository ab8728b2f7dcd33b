"""segfactory.factory: what a model is, how it is built, trained and evaluated; the root command line.

What lives where (each definition has one home; docs/layout.md has the whole map):

- the architecture: ``genotype`` (the searched decoder as a value), ``zoo`` and ``reference`` (named
  architectures), ``config`` (ModelConfig and the model defaults: ``RELEASED``, ``SEARCH_PROXY``, ``LIMITS``);
- building it: ``model`` (``build_model``, the one way to build), ``registry`` (the name-keyed registry every
  registry uses), ``ops`` (op and merge registries), ``decoder`` (the template decoder; ``walk_decoder`` wires
  it, for the network and for the lookup-table units), ``encoder``, ``encoder_weights``, ``tflite_import`` and
  ``weights/`` (the fixed encoder and its weights);
- what it costs: ``cost`` (parameters, MACs, activations), ``memory`` (memory bounds, checked before anything
  large is allocated), ``arch_report``;
- data and training: ``datasets``, ``transforms``, ``metrics``, ``evaluate`` (takes a predictor),
  ``training/`` (recipes, ``TrainStep``, the resumable run), ``checkpoint``;
- the command line: ``cli`` (the root; other packages' commands by string, lazily), ``commands/`` (arch, weights,
  train, predict; ``flags.py``: ``option()``, the one way every command declares a flag, with its --help
  section; ``types.py``: ``Float``, a float flag refusing NaN and infinities, and ``Names``, a choice read
  from a registry; the flags they share in ``options.py``); ``checks`` (settings dataclasses checked against
  their annotations); ``io``, ``errors``.

Importing this package is cheap and imports no torch: the device agent (which has no torch) imports the CLI
through it. Import submodules (``segfactory.factory.model``) for the heavy parts.
"""

from segfactory.factory._version import __version__

__all__ = ["__version__"]
