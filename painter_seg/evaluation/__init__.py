"""Evaluation: semantic / few-shot IoU metrics and the DAVIS 2017 J&F protocol for video."""
from .jf import (
    BOUND_TH,
    SUMMARY_KEYS,
    VOID_LABEL,
    ObjectResult,
    bound_pixels,
    boundary_f_measure,
    db_statistics,
    disk,
    evaluate_sequence,
    region_similarity,
    seg2bmap,
    summarize,
)
from .miou import IGNORE_INDEX, ConfusionMatrix, FewShotMeter, binary_iou
from .vos import CSV_COLUMNS, evaluate_vos, read_index_mask

__all__ = [
    "BOUND_TH", "CSV_COLUMNS", "IGNORE_INDEX", "SUMMARY_KEYS", "VOID_LABEL", "ConfusionMatrix",
    "FewShotMeter", "ObjectResult", "binary_iou", "bound_pixels", "boundary_f_measure",
    "db_statistics", "disk", "evaluate_sequence", "evaluate_vos",
    "read_index_mask", "region_similarity", "seg2bmap", "summarize",
]
