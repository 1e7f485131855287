"""Backbones (tokenizer + blocks) and heads."""

from rl_seq.nets.backbone import Backbone, BackboneConfig, Block, GRUGate
from rl_seq.nets.heads import BinHead, CategoricalHead, GaussianHead, SquashedGaussianHead, TanhHead, ValueHead

__all__ = ["Backbone", "BackboneConfig", "Block", "GRUGate", "TanhHead",
           "GaussianHead", "SquashedGaussianHead", "CategoricalHead", "BinHead", "ValueHead"]
