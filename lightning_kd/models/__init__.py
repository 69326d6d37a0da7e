"""Model zoo: small models and CIFAR-style ResNet/WRN; torchvision and timm by name. Pure torch."""

from types import ModuleType as _ModuleType

from lightning_kd.models.discriminator import mlp_discriminator
from lightning_kd.models.generator import ImageGenerator
from lightning_kd.models.hub import timm_model, torchvision_model
from lightning_kd.models.language import llama_lm, pretrained_lm
from lightning_kd.models.lora import lora
from lightning_kd.models.mlp import MLP
from lightning_kd.models.resnet import (
    BasicBlock,
    ResNet,
    resnet8,
    resnet8x4,
    resnet14,
    resnet20,
    resnet32,
    resnet32x4,
    resnet44,
    resnet56,
    resnet110,
)
from lightning_kd.models.small_cnn import SmallCNN
from lightning_kd.models.vit import ViT
from lightning_kd.models.wrn import WideResNet, wrn_16_2, wrn_40_2

__all__ = sorted(n for n, v in globals().items() if not n.startswith("_") and not isinstance(v, _ModuleType))
