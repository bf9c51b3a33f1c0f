"""The tuned-prompt artefact: what :class:`~painter_seg.tuning.PromptTuner` learns, on disk.

A :class:`TunedPrompt` is a prompt image and a prompt mask of the model's prompt-half size, the
palette its classes are painted in, and the identity of the model it was tuned for. It only makes
sense with exactly those weights, so loading it checks the model's name and weights fingerprint.
Any strategy takes it as its first prompt (``strategy.set_prompts(tuned=prompt)``; the ``tuned``
strategy runs it alone like an example pair, or with extra pairs in a feature ensemble).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from ..checkpoint import read_safetensors, weights_fingerprint
from ..codec.seg_type import SegType
from ..errors import InputError
from ..io.files import atomic_path
from ..model import SegGPT

FORMAT = "painter_seg.tuned_prompt"
FORMAT_VERSION = 1


@dataclass
class TunedPrompt:
    """A learned prompt pair and what it was learned for.

    Attributes:
        image: ``[3, h, w]`` float32 prompt image, ImageNet-normalised (h, w = the prompt half).
        mask: ``[3, h, w]`` float32 prompt mask, same space; class ``k`` taught in ``palette[k]``.
        palette: ``[C + 1, 3]`` uint8 RGB, row 0 black (background), row k the colour of class k
            (:func:`painter_seg.codec.palette.make_palette` with the model's palette).
        class_ids: the C label ids the classes had in the training masks (and get in predictions).
        class_names: C names, in ``class_ids`` order.
        seg_type: :class:`~painter_seg.codec.SegType` (any spelling :meth:`SegType.parse` takes).
        model_name: config name of the model (``model.config_name``).
        fingerprint: :func:`painter_seg.checkpoint.weights_fingerprint` of its weights.
        summary: JSON-able training summary (steps, losses, validation mIoU, data, time...).
    """

    image: torch.Tensor
    mask: torch.Tensor
    palette: np.ndarray
    class_ids: list[int]
    class_names: list[str]
    seg_type: SegType
    model_name: str
    fingerprint: str
    summary: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.seg_type = SegType.parse(self.seg_type)

    @property
    def size(self) -> tuple[int, int]:
        """(h, w) of the prompt half it fills."""
        return int(self.image.shape[-2]), int(self.image.shape[-1])

    @property
    def num_classes(self) -> int:
        return len(self.class_ids)

    def check(self, model: SegGPT, source: str | os.PathLike = "tuned prompt") -> None:
        """Raise :class:`InputError` (one line naming ``source``) unless ``model`` is the model this
        prompt was tuned for: same config name, same weights, same prompt-half size."""
        name = str(getattr(model, "config_name", type(model).__name__))
        half = model.half_size
        if half != self.size:
            raise InputError(f"{source}: prompt is {self.size[0]}x{self.size[1]} but model "
                             f"{name!r} takes {half[0]}x{half[1]} prompts; tune a prompt for this "
                             "model")
        found = weights_fingerprint(model)
        if name != self.model_name or found != self.fingerprint:
            raise InputError(f"{source}: tuned for model {self.model_name!r} (weights "
                             f"{self.fingerprint}), but the model is {name!r} (weights {found}); "
                             "tune a prompt for this model")

    def save(self, path: str | os.PathLike) -> Path:
        """Write a safetensors file (tensors ``image``, ``mask``; JSON metadata), atomically."""
        path = Path(path)
        meta = {
            "format": FORMAT, "version": str(FORMAT_VERSION), "model": self.model_name,
            "fingerprint": self.fingerprint, "prompt_size": json.dumps(list(self.size)),
            "palette": json.dumps(np.asarray(self.palette).tolist()),
            "class_ids": json.dumps([int(i) for i in self.class_ids]),
            "class_names": json.dumps([str(n) for n in self.class_names]),
            "seg_type": str(int(self.seg_type)), "summary": json.dumps(self.summary),
        }
        tensors = {"image": self.image.detach().float().cpu().contiguous(),
                   "mask": self.mask.detach().float().cpu().contiguous()}
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        return path

    @classmethod
    def read(cls, path: str | os.PathLike) -> TunedPrompt:
        """Read a saved prompt without checking it against a model (see :meth:`load`)."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: tuned prompt file not found")
        tensors, meta = read_safetensors(path)
        if meta.get("format") != FORMAT or set(tensors) != {"image", "mask"}:
            raise InputError(f"{path}: not a tuned prompt (expected a safetensors file written by "
                             "tools/tune_prompt.py)")
        try:
            prompt = cls(
                image=tensors["image"], mask=tensors["mask"],
                palette=np.asarray(json.loads(meta["palette"]), dtype=np.uint8),
                class_ids=[int(i) for i in json.loads(meta["class_ids"])],
                class_names=[str(n) for n in json.loads(meta["class_names"])],
                seg_type=SegType.parse(int(meta["seg_type"])), model_name=meta["model"],
                fingerprint=meta["fingerprint"], summary=json.loads(meta.get("summary", "{}")),
            )
        except (KeyError, ValueError, TypeError) as e:
            raise InputError(f"{path}: tuned prompt metadata is incomplete or corrupt ({e})") from e
        if (prompt.image.shape != prompt.mask.shape or prompt.image.ndim != 3
                or len(prompt.palette) != prompt.num_classes + 1):
            raise InputError(f"{path}: tuned prompt tensors or palette have inconsistent shapes")
        return prompt

    @classmethod
    def load(cls, path: str | os.PathLike, model: SegGPT) -> TunedPrompt:
        """Read a saved prompt and check that it belongs to ``model`` (:meth:`check`)."""
        prompt = cls.read(path)
        prompt.check(model, path)
        return prompt
