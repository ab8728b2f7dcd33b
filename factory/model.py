"""``build_model``: the one way to turn an architecture (a genotype or a reference model) and a ModelConfig into a
segmentation network. Every model it returns has the same contract: ``forward(x)`` -> logits (N, K, H, W) at the
input's size, ``forward(x, native=True)`` -> logits at the head's own resolution, ``encoder``/``decoder`` parts,
``arch`` (what it is) and ``config``."""

from __future__ import annotations

from segfactory.factory.config import ModelConfig
from segfactory.factory.decoder import TemplateDecoder
from segfactory.factory.encoder import Encoder
from segfactory.factory.errors import InputError
from segfactory.factory.genotype import Genotype
from segfactory.factory.ops import resize
from segfactory.factory.reference import REFERENCES, Reference
from torch import Tensor, nn

Arch = Genotype | Reference


class SegModel(nn.Module):
    """Encoder + template decoder. ``forward(x)`` returns logits (N, K, H, W) at the input's resolution.

    ``forward(x, native=True)`` returns the decoder's logits at its finest collected map instead (what the
    paper trains on). The final bilinear upsample is part of the model, so an exported graph is complete.
    """

    def __init__(self, genotype: Genotype, config: ModelConfig) -> None:
        super().__init__()
        self.arch = genotype
        self.genotype = genotype
        self.config = config
        self.encoder = Encoder(config.encoder_padding)
        self.decoder = TemplateDecoder(
            genotype, Encoder.out_channels, config.num_classes, config.agg_size, config.sep_repeats
        )

    def forward(self, x: Tensor, native: bool = False) -> Tensor:
        logits = self.decoder(*self.encoder(x))
        return logits if native else resize(logits, x.shape[-2:])


class ReferenceModel(nn.Module):
    """A torchvision segmentation network (see :mod:`segfactory.factory.reference`) with the project's contract."""

    def __init__(self, reference: Reference, config: ModelConfig) -> None:
        super().__init__()
        self.arch = reference
        self.genotype = None  # not a searched decoder
        self.config = config
        self.net = REFERENCES.get(reference.name)(config.num_classes)
        self.encoder = self.net.backbone  # -> dict of feature maps
        self.decoder = self.net.classifier
        self._head_takes_dict = type(self.net).__name__ == "LRASPP"  # DeepLabV3's head takes features["out"]

    def forward(self, x: Tensor, native: bool = False) -> Tensor:
        features = self.encoder(x)
        logits = self.decoder(features if self._head_takes_dict else features["out"])  # LR-ASPP /8, DeepLabV3 /16
        return logits if native else resize(logits, x.shape[-2:])


def config_for(arch: Arch, config: ModelConfig) -> ModelConfig:
    """``config`` adapted to ``arch``: a reference model has no pretrained encoder here, so its config carries
    encoder weights "none" (and the ImageNet normalisation that goes with them); a genotype keeps ``config``."""
    if isinstance(arch, Reference) and config.encoder_weights != "none":
        return ModelConfig.create(config.num_classes, config.agg_size, config.sep_repeats, "none",
                                  config.class_names)
    return config


def build_model(arch: Arch, config: ModelConfig | None = None, load_weights: bool = True) -> nn.Module:
    """Build ``arch`` (a genotype or a :class:`Reference`) under ``config`` (default: released CamVid config).

    With ``load_weights`` a genotype's encoder gets the pretrained weights ``config.encoder_weights`` names; the
    decoder is freshly initialised. A reference model is always built from scratch (``encoder_weights`` "none").
    """
    if isinstance(arch, Reference):
        config = config or ModelConfig.create(encoder_weights="none")
        if config.encoder_weights != "none":
            raise InputError(f"{arch.name} is trained from scratch here (torchvision's weights need the internet): "
                             "its encoder weights must be 'none'")
        return ReferenceModel(arch, config)
    config = config or ModelConfig.create()
    model = SegModel(arch, config)
    if load_weights and config.encoder_weights != "none":
        from segfactory.factory.encoder_weights import load_encoder_weights

        load_encoder_weights(model.encoder, config.encoder_weights)
    return model


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
