"""nn.Modules of painter_seg: the SegGPT network, its layers and its loss."""
from .layers import (
    Attention,
    Block,
    decomposed_rel_pos_bias,
    feature_ensemble,
    get_rel_pos,
    resample_rel_pos,
)
from .loss import masked_smooth_l1
from .seggpt import SegGPT

__all__ = [
           "Attention",
           "Block",
           "SegGPT",
           "decomposed_rel_pos_bias",
           "feature_ensemble",
           "get_rel_pos",
           "masked_smooth_l1",
           "resample_rel_pos",
]
