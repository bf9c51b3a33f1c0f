"""The two SegGPT task types and the one parser for every spelling users and configs give them."""
from __future__ import annotations

from enum import IntEnum

from ..errors import InputError


class SegType(IntEnum):
    """What the prompt's colours mean. The value is the model's type token (0 or 1).

    ``SEMANTIC``: one colour per class, every pixel of a class shares it. ``INSTANCE``: one colour per object;
    the model keeps objects of the same class apart.
    """

    SEMANTIC = 0
    INSTANCE = 1

    @classmethod
    def parse(cls, value: SegType | str | int | bool) -> SegType:
        """``"semantic"``/``"instance"`` (any case), 0/1 or a :class:`SegType`; anything else is a one-line
        :class:`~painter_seg.errors.InputError`."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            key = value.strip().lower()
            if key in ("semantic", "instance"):
                return cls[key.upper()]
            if key in ("0", "1"):
                return cls(int(key))
        elif isinstance(value, (int, bool)) and int(value) in (0, 1):
            return cls(int(value))
        raise InputError(f"seg_type={value!r}: expected semantic or instance")

    def __str__(self) -> str:
        return self.name.lower()
