"""``build_model``: the one way to turn a genotype and a ModelConfig into a segmentation network."""

from __future__ import annotations

from torch import Tensor, nn

from segfactory.factory.config import ModelConfig
from segfactory.factory.decoder import TemplateDecoder
from segfactory.factory.encoder import Encoder
from segfactory.factory.genotype import Genotype
from segfactory.factory.ops import resize


class SegModel(nn.Module):
    """Encoder + template decoder. ``forward(x)`` returns logits (N, K, H, W) at the input's resolution.

    ``forward(x, native=True)`` returns the decoder's logits at its finest collected map instead (what the
    paper trains on). The final bilinear upsample is part of the model, so an exported graph is complete.
    """

    def __init__(self, genotype: Genotype, config: ModelConfig) -> None:
        super().__init__()
        self.genotype = genotype
        self.config = config
        self.encoder = Encoder(config.encoder_padding)
        self.decoder = TemplateDecoder(
            genotype, Encoder.out_channels, config.num_classes, config.agg_size, config.sep_repeats
        )

    def forward(self, x: Tensor, native: bool = False) -> Tensor:
        logits = self.decoder(*self.encoder(x))
        return logits if native else resize(logits, x.shape[-2:])


def build_model(genotype: Genotype, config: ModelConfig | None = None, load_weights: bool = True) -> SegModel:
    """Build the model of ``genotype`` under ``config`` (default: released CamVid configuration).

    With ``load_weights`` the encoder gets the pretrained weights ``config.encoder_weights`` names; the
    decoder is freshly initialised.
    """
    config = config or ModelConfig.create()
    model = SegModel(genotype, config)
    if load_weights and config.encoder_weights != "none":
        from segfactory.factory.encoder_weights import load_encoder_weights

        load_encoder_weights(model.encoder, config.encoder_weights)
    return model


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
