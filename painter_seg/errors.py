"""Exceptions for problems with what the user gave us (files, arguments), reported as one line."""
from __future__ import annotations


class InputError(ValueError):
    """A user input is unusable. The message is one line and names the file (or argument) and the problem."""


class CheckpointError(InputError):
    """A checkpoint cannot be read, is unsafe, or does not fit the model (missing/unexpected/mis-shaped keys)."""
