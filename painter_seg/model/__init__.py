"""nn.Modules of painter_seg: the SegGPT network, its layers and its loss."""
from .layers import Attention, Block, decomposed_rel_pos_bias, feature_ensemble, get_rel_pos
from .loss import masked_smooth_l1
from .seggpt import SegGPT

__all__ = ["SegGPT", "Attention", "Block", "feature_ensemble", "get_rel_pos", "decomposed_rel_pos_bias",
           "masked_smooth_l1"]
