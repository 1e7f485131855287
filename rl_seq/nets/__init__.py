"""Backbones (tokenizer + blocks) and heads."""

from rl_seq.nets.backbone import Backbone, BackboneConfig, Block, GRUGate, select_state
from rl_seq.nets.heads import CategoricalHead, GaussianHead, QBinHead, TanhHead, ValueHead

__all__ = ["Backbone", "BackboneConfig", "Block", "GRUGate", "select_state", "TanhHead",
           "GaussianHead", "CategoricalHead", "QBinHead", "ValueHead"]
