"""Training samples for in-context segmentation: (prompt, query) pairs made into SegGPT canvases.

A sample is two views that share a context (the same class, the same object, or two augmented views
of one image), stacked prompt over query. The recipe follows the SegGPT paper (seggpt_facts §4.1,
§4.3) and Painter's data pipeline:

1. **Paired augmentation.** Each (image, label map) gets one random resized crop and horizontal
   flip, applied identically to the image and to its labels (bicubic for images, nearest for
   labels); colour jitter touches the image only.
2. **Mix-context** (probability ``mix_context_p``). Each half is instead a grid of 2-4 augmented
   views of the same context (all painted with one colour mapping), randomly cropped and resized
   back to the half size.
3. **Random colouring.** The ids found in the pair are mapped to random, well separated colours
   (:func:`~painter_seg.codec.palette.random_palette`, id 0 = black), one mapping for prompt *and*
   query: "same colour = same class / instance". Optionally only a random subset of the ids is kept
   (the others become background), the paper's "random subset of categories / instances".
4. **Canvas.** Images and colour masks are ImageNet-normalised and stacked prompt over query, with a
   ``valid`` map that is 0 on ignored pixels.

Every sample is a pure function of ``(seed, index)``: workers, epochs and resumption do not change
it.
Datasets return ``{"imgs": [3, 2h, w], "tgts": [3, 2h, w], "valid": [1, 2h, w], "seg_type": int64}``
(float32, ImageNet-normalised; ``seg_type`` 0 = semantic, 1 = instance).

Modules: ``recipe`` (:class:`InContextRecipe`), ``augment`` (steps 1-2), ``sample`` (steps 3-4),
``datasets`` (generated, folder and mixed datasets), ``video`` (video-like pairs: frames of
generated clips, photos under motion-like warps), ``real`` (the photo sets of
``../shared/data_train``: PASCAL co-segmentation, Weizmann horses, CIHP parts) and ``build`` (:func:`build_train_dataset`, the
``conf/data/*_train.yaml`` entry point).
"""

from .augment import augment_view, color_jitter, mix_context_view, random_resized_crop_box
from .build import build_train_dataset
from .datasets import (
    FolderInContextDataset,
    MixedInContextDataset,
    SyntheticInContextDataset,
    folder_in_context_dataset,
)
from .real import (
    PASCAL_HOLDOUT,
    RealPairsDataset,
    cihp_parts_dataset,
    pascal_voc_coseg_dataset,
    weizmann_horses_dataset,
)
from .recipe import InContextRecipe
from .sample import colorize_pair, finish_sample, make_canvas, make_sample
from .video import (
    MotionPairsDataset,
    SyntheticClipPairsDataset,
    motion_warp,
    pascal_motion_pairs_dataset,
    shared_crop,
)

__all__ = [
    "PASCAL_HOLDOUT",
    "FolderInContextDataset",
    "InContextRecipe",
    "MixedInContextDataset",
    "MotionPairsDataset",
    "RealPairsDataset",
    "SyntheticClipPairsDataset",
    "SyntheticInContextDataset",
    "augment_view",
    "build_train_dataset",
    "cihp_parts_dataset",
    "color_jitter",
    "colorize_pair",
    "finish_sample",
    "folder_in_context_dataset",
    "make_canvas",
    "make_sample",
    "mix_context_view",
    "motion_warp",
    "pascal_motion_pairs_dataset",
    "pascal_voc_coseg_dataset",
    "random_resized_crop_box",
    "shared_crop",
    "weizmann_horses_dataset",
]
