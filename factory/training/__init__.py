"""Training: recipes, the one training step, Polyak averaging, augmented data, and the resumable run.

- :mod:`.recipes`: named recipes (optimiser, rates, schedule, augmentation, loss) in a registry;
- :mod:`.step`: :class:`TrainStep`, the one training step that ``segfactory train`` and the search proxy share;
- :mod:`.averaging`: :class:`PolyakAverage`, capped by the schedule so short runs keep what they learn;
- :mod:`.data`: seeded, augmented loaders, reproducible across resumes and worker counts;
- :mod:`.config` and :mod:`.run`: :class:`TrainConfig` and :func:`train` (epochs or minutes, resumable);
- :mod:`.loop`: the epoch loop behind :func:`train`.
"""

from segfactory.factory.training.averaging import PolyakAverage, effective_decay
from segfactory.factory.training.config import TrainConfig
from segfactory.factory.training.data import iterate, make_train_loader, set_epoch
from segfactory.factory.training.recipes import RECIPES, Recipe
from segfactory.factory.training.run import STATE_FORMAT, check_training_memory, train
from segfactory.factory.training.step import NonFiniteLoss, TrainStep, make_optimizer, poly_factor, seg_loss

__all__ = [
           "RECIPES",
           "STATE_FORMAT",
           "NonFiniteLoss",
           "PolyakAverage",
           "Recipe",
           "TrainConfig",
           "TrainStep",
           "check_training_memory",
           "effective_decay",
           "iterate",
           "make_optimizer",
           "make_train_loader",
           "poly_factor",
           "seg_loss",
           "set_epoch",
           "train",
]
