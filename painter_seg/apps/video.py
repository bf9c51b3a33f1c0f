"""Video object propagation from annotated frames (SegGPT paper: first frame + K previous predictions under
the feature ensemble), keeping every object's id.

The official code feeds back a thresholded white mask, so with several objects all ids collapse into one. Here
each object keeps a fixed colour for the whole video; fed-back frames are re-coloured with those colours, so ids
survive, and an object that disappears and comes back is still decoded with its own colour (the annotated
frame stays in the context).

    prop = VideoPropagator(build_model("default"), context_frames=8)
    state = prop.init("frames/")                     # a folder of frames or an .mp4, read lazily
    prop.add_mask(state, 0, first_mask)              # [H, W] ids, 0 = background
    for idx, labels in prop.propagate(state):
        ...
"""
from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from ..codec.canvas import (
    normalize,
    paint_from_half,
    resize_color_mask,
    resize_image,
    resize_labels,
    resize_paint,
)
from ..codec.palette import build_palette, decode_paint, labels_to_colors
from ..errors import InputError
from ..io.video import FrameSource
from ..model import SegGPT
from ..strategies import FeatureEnsembleStrategy
from ..utils.runtime import autocast

_OBJECT_COLORS = build_palette(26)  # 26 colours, 85 apart per channel: well separated for decoding


def object_colors(ids: np.ndarray) -> np.ndarray:
    """Fixed colour per object id: ``[256, 3]`` uint8, 0 = black. An id's colour never depends on which other
    objects exist, so it stays the same when objects are added later."""
    pal = np.zeros((256, 3), np.uint8)
    table = _OBJECT_COLORS if len(ids) <= 26 else build_palette(255)
    for i in ids:
        pal[i] = table[1 + (int(i) - 1) % (len(table) - 1)]
    return pal


@dataclass
class VideoState:
    """Everything one propagation needs, in plain fields.

    Attributes:
        frames: the lazy frame source.
        size: (H, W) of every frame.
        annotations: frame index -> given label map (full size); only the frames the user annotated.
        object_ids: ids of all objects annotated so far (sorted).
        anchors: model-space (image, mask) tensors ``[3, h, w]`` of the annotated frames, always in the context.
        recent: FIFO of the last K predicted frames as (image, label map at model size), bounded (flat memory).
    """

    frames: FrameSource
    size: tuple[int, int]
    annotations: dict[int, np.ndarray] = field(default_factory=dict)
    object_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    anchors: dict[int, tuple[torch.Tensor, np.ndarray]] = field(default_factory=dict)
    recent: deque = field(default_factory=deque)

    @property
    def start(self) -> int:
        if not self.annotations:
            raise RuntimeError("add_mask(...) at least once before propagate()")
        return min(self.annotations)


class VideoPropagator:
    """Propagate annotated objects through a video with one shared model.

    Args:
        model: the SegGPT model (shared, never modified).
        context_frames: K, how many of the most recent predicted frames join the annotated frame(s) as prompts
            (0 = annotated frames only; the paper found K = 8 best on DAVIS-2017).
        seg_type: 1 instance (default for VOS) or 0 semantic.
        precision: fp32 | bf16 | fp16 autocast.
        bg_threshold: foreground pixels whose colour score is below this become background.
    """

    def __init__(self, model: SegGPT, context_frames: int = 8, seg_type: int = 1, precision: str = "fp32",
                 bg_threshold: float = 0.0) -> None:
        if context_frames < 0:
            raise InputError(f"context_frames={context_frames}: must be >= 0")
        self.model = model
        self.context_frames = context_frames
        self.seg_type = seg_type
        self.precision = precision
        self.bg_threshold = bg_threshold
        self.strategy = FeatureEnsembleStrategy(model)

    @property
    def half_size(self) -> tuple[int, int]:
        return self.strategy.half_size

    def init(self, frames_source: str | os.PathLike | FrameSource) -> VideoState:
        """Open a video (folder of frames or video file) lazily and return a fresh state."""
        src = frames_source if isinstance(frames_source, FrameSource) else FrameSource(frames_source)
        return VideoState(frames=src, size=src.size, recent=deque(maxlen=self.context_frames))

    def add_mask(self, state: VideoState, frame_idx: int, label_map: np.ndarray,
                 frame: np.ndarray | None = None) -> None:
        """Annotate frame ``frame_idx`` with ``label_map`` (``[H, W]`` ids 0..255, 0 = background). Later
        annotations may add new objects; their pixels override the prediction at that frame."""
        labels = np.asarray(label_map).astype(np.int64)
        if labels.shape != tuple(state.size):
            raise InputError(f"mask for frame {frame_idx} is {labels.shape[1]}x{labels.shape[0]} but the "
                             f"frames are {state.size[1]}x{state.size[0]}")
        if labels.min() < 0 or labels.max() > 255:
            raise InputError(f"mask for frame {frame_idx}: ids must be in 0..255, got up to {labels.max()}")
        if not labels.any():
            raise InputError(f"mask for frame {frame_idx} has no objects (all background)")
        if not 0 <= frame_idx < len(state.frames):
            raise InputError(f"frame {frame_idx} is outside the video's {len(state.frames)} frames")
        state.annotations[frame_idx] = labels
        state.object_ids = np.union1d(state.object_ids, np.unique(labels[labels > 0]))
        if frame is not None:
            self._set_anchor(state, frame_idx, frame, labels)

    def _set_anchor(self, state: VideoState, idx: int, frame: np.ndarray, labels: np.ndarray) -> None:
        state.anchors[idx] = (self._image_tensor(frame), self._small_labels(labels))

    def _image_tensor(self, frame: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(normalize(resize_image(frame, self.half_size)).transpose(2, 0, 1)).float()

    def _small_labels(self, labels: np.ndarray) -> np.ndarray:
        return resize_labels(labels, self.half_size)

    def _mask_tensor(self, small_labels: np.ndarray, palette: np.ndarray) -> torch.Tensor:
        colors = labels_to_colors(small_labels, palette)
        return torch.from_numpy(normalize(resize_color_mask(colors, self.half_size)).transpose(2, 0, 1)).float()

    def _context(self, state: VideoState, palette: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [state.anchors[i] for i in sorted(state.anchors)] + list(state.recent)
        imgs = torch.stack([p[0] for p in pairs])
        masks = torch.stack([self._mask_tensor(p[1], palette) for p in pairs])
        return imgs, masks

    @torch.inference_mode()
    def predict_frame(self, state: VideoState, frame: np.ndarray) -> np.ndarray:
        """Label map ``[H, W]`` of one frame from the current context (does not change the state)."""
        palette = object_colors(state.object_ids)
        table = np.concatenate([[0], state.object_ids])
        dec_palette = palette[table]
        imgs, masks = self._context(state, palette)
        self.strategy.set_prompts(imgs, masks, self.seg_type)
        device = self.strategy.device
        with autocast(device, self.precision):
            pred = self.strategy.predict(self._image_tensor(frame).to(device))
        paint = paint_from_half(pred[None])[0]
        paint = resize_paint(paint, state.size, mode="bilinear")
        compact, _ = decode_paint(paint, dec_palette, bg_threshold=self.bg_threshold)
        return table[compact]

    def remember(self, state: VideoState, idx: int, frame: np.ndarray, labels: np.ndarray) -> None:
        """Record frame ``idx`` with its final labels: annotated frames become anchors, others enter the FIFO."""
        if idx in state.annotations:
            self._set_anchor(state, idx, frame, labels)
        elif self.context_frames > 0:
            state.recent.append((self._image_tensor(frame), self._small_labels(labels)))

    def propagate(self, state: VideoState, known: Mapping[int, np.ndarray] | None = None
                  ) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(frame_idx, label_map)`` for every frame from the first annotated one to the end.

        Args:
            known: optional frame index -> label map already computed (e.g. written by an earlier run); those
                frames are not predicted again but still feed the context, so a resumed run continues exactly.
                Each is looked up once, when its frame comes: a lazy mapping (reading files on demand) keeps
                memory flat.
        """
        start = state.start
        known = known or {}
        for idx, _name, frame in state.frames:
            if idx < start:
                continue
            if idx in state.annotations and idx not in state.anchors:
                self._set_anchor(state, idx, frame, state.annotations[idx])
            if idx == start:
                labels = state.annotations[idx]
            elif idx in known:
                labels = known[idx]
            else:
                labels = self.predict_frame(state, frame)
                if idx in state.annotations:  # a later annotation: its objects override the prediction
                    ann = state.annotations[idx]
                    labels = np.where(ann > 0, ann, labels)
            if idx in state.annotations:
                state.annotations[idx] = labels
            self.remember(state, idx, frame, labels)
            yield idx, labels
