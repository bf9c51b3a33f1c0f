"""Reading, converting, checking and writing SegGPT checkpoints.

Three layouts are understood, all holding the same 354 tensors for ViT-L:

* ``original``: the official ``seggpt_vit_large.pth`` (``{"model": state_dict}``), whose key names are this
  package's module tree, so it loads with no renaming;
* ``hf``: the transformers port (``model.safetensors`` / ``pytorch_model.bin`` of ``SegGptForImageSegmentation``,
  keys ``model.embeddings.*``, ``model.encoder.layers.{i}.*``, ``decoder.*``; a bare ``SegGptModel`` drops the
  ``model.`` prefix and has no decoder);
* ``safetensors``: our own file, original key names, with a small metadata header.

Nothing here executes pickled code: ``.pth``/``.bin`` files go through ``torch.load(weights_only=True)``.
Loading is strict; a mismatch raises :class:`CheckpointMismatchError`, one line listing every missing,
unexpected and mis-shaped key.
"""
from __future__ import annotations

import json
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from .errors import CheckpointError, InputError
from .io.files import ensure_output_dir
from .model.layers import resample_rel_pos

LAYOUTS = ("original", "hf", "safetensors")

# original name -> HF name (SegGptForImageSegmentation). Block keys use "{i}".
_HF_FIXED = {
    "patch_embed.proj.weight": "model.embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "model.embeddings.patch_embeddings.projection.bias",
    "mask_token": "model.embeddings.mask_token",
    "segment_token_x": "model.embeddings.segment_token_input",  # image stream (HF naming trap)
    "segment_token_y": "model.embeddings.segment_token_prompt",  # mask stream
    "type_token_cls": "model.embeddings.type_token_semantic",
    "type_token_ins": "model.embeddings.type_token_instance",
    "pos_embed": "model.embeddings.position_embeddings",
    "norm.weight": "model.encoder.layernorm.weight",
    "norm.bias": "model.encoder.layernorm.bias",
    "decoder_embed.weight": "decoder.decoder_embed.weight",
    "decoder_embed.bias": "decoder.decoder_embed.bias",
    "decoder_pred.0.weight": "decoder.decoder_pred.conv.weight",
    "decoder_pred.0.bias": "decoder.decoder_pred.conv.bias",
    "decoder_pred.1.weight": "decoder.decoder_pred.layernorm.weight",
    "decoder_pred.1.bias": "decoder.decoder_pred.layernorm.bias",
    "decoder_pred.3.weight": "decoder.decoder_pred.head.weight",
    "decoder_pred.3.bias": "decoder.decoder_pred.head.bias",
}
_HF_BLOCK = {
    "norm1": "layernorm_before",
    "norm2": "layernorm_after",
    "attn.qkv": "attention.qkv",
    "attn.proj": "attention.proj",
    "attn.rel_pos_h": "attention.rel_pos_h",
    "attn.rel_pos_w": "attention.rel_pos_w",
    "mlp.fc1": "mlp.lin1",
    "mlp.fc2": "mlp.lin2",
}
_HF_FIXED_INV = {v: k for k, v in _HF_FIXED.items()}
_HF_BLOCK_INV = {v: k for k, v in _HF_BLOCK.items()}
_ORIG_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.(.+?)((?:\.weight|\.bias)?)$")
_HF_BLOCK_RE = re.compile(r"^model\.encoder\.layers\.(\d+)\.(.+?)((?:\.weight|\.bias)?)$")


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's tensors do not match the model's: lists missing, unexpected and mis-shaped keys."""

    def __init__(self, source: str, missing: list[str], unexpected: list[str],
                 mismatched: list[tuple[str, tuple, tuple]], model_name: str = "model") -> None:
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing ({_preview(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({_preview(unexpected)})")
        if mismatched:
            shown = [f"{k}: checkpoint {list(a)} vs model {list(b)}" for k, a, b in mismatched]
            parts.append(f"{len(mismatched)} mis-shaped ({_preview(shown)})")
        super().__init__(f"{source}: checkpoint does not fit {model_name}: " + "; ".join(parts))


def _preview(items: list[str], n: int = 6) -> str:
    return ", ".join(items[:n]) + (f", ... (+{len(items) - n} more)" if len(items) > n else "")


# ---------------------------------------------------------------------------------------------- key maps
def original_to_hf(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename original keys to the transformers ``SegGptForImageSegmentation`` layout (shapes unchanged)."""
    out = {}
    for k, v in state_dict.items():
        if k in _HF_FIXED:
            out[_HF_FIXED[k]] = v
            continue
        m = _ORIG_BLOCK_RE.match(k)
        if not m or m.group(2) not in _HF_BLOCK:
            raise CheckpointError(f"key {k!r} has no transformers equivalent")
        out[f"model.encoder.layers.{m.group(1)}.{_HF_BLOCK[m.group(2)]}{m.group(3)}"] = v
    return out


def hf_to_original(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename transformers keys (with or without the ``model.`` prefix) to the original layout.

    Keys with no counterpart are kept as they are, so the strict check reports them as unexpected.
    """
    out = {}
    for k, v in state_dict.items():
        if not k.startswith(("model.", "decoder.")):
            k = "model." + k  # bare SegGptModel
        if k in _HF_FIXED_INV:
            out[_HF_FIXED_INV[k]] = v
            continue
        m = _HF_BLOCK_RE.match(k)
        if m and m.group(2) in _HF_BLOCK_INV:
            out[f"blocks.{m.group(1)}.{_HF_BLOCK_INV[m.group(2)]}{m.group(3)}"] = v
        else:
            out[k] = v
    return out


def detect_layout(state_dict: Mapping[str, torch.Tensor]) -> str:
    """'hf' when the keys are the transformers port's, else 'original'."""
    hf_markers = ("model.embeddings.", "embeddings.patch_embeddings.", "model.encoder.layers.", "decoder.decoder_")
    return "hf" if any(k.startswith(hf_markers) for k in state_dict) else "original"


def clean_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Unwrap DDP / torch.compile prefixes (``module.``, ``_orig_mod.``) and convert HF names."""
    out = {}
    for k, v in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            while k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return hf_to_original(out) if detect_layout(out) == "hf" else out


# ---------------------------------------------------------------------------------------------- reading
def resolve_source(source: str | os.PathLike) -> Path:
    """Turn a checkpoint source into a local file.

    Accepted: a file path; a directory holding ``model.safetensors`` or ``pytorch_model.bin`` (a transformers
    snapshot); ``pkg://painter_seg/<path>`` (a file shipped inside the package); ``hf://<repo_id>[/<file>]``
    (downloaded with ``huggingface_hub`` when installed and online).
    """
    s = str(source)
    if s.startswith("pkg://"):
        pkg, _, rel = s[len("pkg://"):].partition("/")
        path = Path(str(resources.files(pkg).joinpath(rel)))
    elif s.startswith("hf://"):
        path = _download_hf(s[len("hf://"):])
    else:
        path = Path(s).expanduser()
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin", "seggpt_vit_large.pth"):
            if (path / name).is_file():
                return path / name
        raise CheckpointError(f"{path}: directory holds no model.safetensors, pytorch_model.bin or .pth")
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty checkpoint file (0 bytes)")
    return path


def _download_hf(spec: str) -> Path:  # pragma: no cover - needs network, never run in tests
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:
        raise CheckpointError(f"hf://{spec}: install huggingface_hub (pip install '.[hub]') to download") from e
    parts = spec.split("/")
    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:]) or None
    if filename is None:
        filename = "seggpt_vit_large.pth" if repo_id == "BAAI/SegGPT" else "model.safetensors"
    return Path(hf_hub_download(repo_id=repo_id, filename=filename))


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, header metadata)`` of a safetensors file; :class:`CheckpointError` (one line) if unreadable."""
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        return load_file(str(path)), meta
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({_one_line(e)})") from e


def read_state_dict(source: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read tensors (original key names) and metadata from any supported checkpoint source, safely.

    Returns:
        ``(state_dict, metadata)``; metadata holds ``layout`` (the layout found) and, for our own
        safetensors, what was stored in its header.
    """
    path = resolve_source(source)
    meta: dict[str, str] = {}
    if path.suffix == ".safetensors":
        sd, meta = read_safetensors(path)
    else:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            found = re.search(r"unsupported global[^\n]*?(?= whose|\.?$)", str(e), re.IGNORECASE | re.MULTILINE)
            if found is None:
                raise CheckpointError(f"{path}: not a readable torch checkpoint (corrupt pickle)") from e
            raise CheckpointError(
                f"{path}: refused to load: the file holds pickled objects other than tensors "
                f"({_one_line(found.group(0))}); only weights are read, never code"
            ) from e
        except Exception as e:  # zip/format errors of many kinds
            raise CheckpointError(f"{path}: not a readable torch checkpoint ({_one_line(e)})") from e
        sd = _unwrap(obj, path)
    if not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: checkpoint holds non-tensor entries where weights were expected")
    meta["layout"] = detect_layout(sd) if meta.get("format") != "painter_seg" else "safetensors"
    return clean_state_dict(sd), meta


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict", "model_state"):
            if key in obj and isinstance(obj[key], Mapping):
                return dict(obj[key])
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
    raise CheckpointError(f"{path}: no state dict found (expected tensors, or a 'model'/'state_dict' entry)")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300]


# ---------------------------------------------------------------------------------------------- loading
@dataclass
class LoadReport:
    """What :func:`load_checkpoint` did."""

    source: str
    layout: str
    num_tensors: int
    num_params: int
    metadata: dict[str, str] = field(default_factory=dict)
    resampled: list[str] = field(default_factory=list)   # rel-pos tables fitted to the model's canvas
    resampled_rows: tuple[int, ...] = ()                 # their row counts in the checkpoint

    def __str__(self) -> str:
        text = (f"loaded {self.num_tensors} tensors ({self.num_params:,} parameters, {self.layout} layout) "
                f"from {self.source}")
        if self.resampled:
            rows = "/".join(str(r) for r in sorted(set(self.resampled_rows)))
            text += (f"; {len(self.resampled)} relative-position tables resampled from {rows} rows "
                     f"(the model's canvas differs from the checkpoint's)")
        return text


_REL_POS_RE = re.compile(r"^blocks\.\d+\.attn\.rel_pos_[hw]$")


def fit_rel_pos(model: nn.Module, state_dict: Mapping[str, torch.Tensor]
                ) -> tuple[dict[str, torch.Tensor], list[str], list[int]]:
    """Resample the checkpoint's relative-position tables to the model's canvas where only their length differs.

    The weights of a ViT with decomposed relative positions do not depend on the canvas but for these tables
    (``[2n - 1, C]`` for an ``n``-patch axis; the absolute table is interpolated at run time): a model built for
    another canvas (``net.img_size``) loads any checkpoint of the same architecture this way. Any other shape
    difference is left for the strict check to report.

    Returns:
        ``(state_dict, resampled keys, their row counts in the checkpoint)``.
    """
    own = model.state_dict()
    out, keys, rows = dict(state_dict), [], []
    for k, v in state_dict.items():
        if not _REL_POS_RE.match(k) or k not in own or v.dim() != 2:
            continue
        want = own[k].shape
        if v.shape[1] == want[1] and v.shape[0] != want[0]:
            out[k] = resample_rel_pos(v, want[0])
            keys.append(k)
            rows.append(v.shape[0])
    return out, keys, rows


def check_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint",
    model_name: str | None = None,
) -> None:
    """Raise :class:`CheckpointMismatchError` unless keys and shapes equal the model's exactly."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    mismatched = [
        (k, tuple(state_dict[k].shape), tuple(own[k].shape))
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:
        raise CheckpointMismatchError(source, missing, unexpected, mismatched,
                                      model_name or type(model).__name__)


def load_checkpoint(
    model: nn.Module,
    source: str | os.PathLike,
    strict: bool = True,
    model_name: str | None = None,
    assign: bool = False,
) -> LoadReport:
    """Load weights from any supported layout into ``model``.

    Args:
        model: the network (e.g. :class:`painter_seg.model.SegGPT`).
        source: path, transformers snapshot folder, ``pkg://`` or ``hf://`` source.
        strict: require exactly the model's keys and shapes (default). With ``strict=False`` only the keys
            present with the right shape are copied and the rest is left as initialised.
        model_name: used in error messages.
        assign: (strict only) the loaded tensors become the parameters, cast to the model's dtypes, instead of
            being copied into them: a model built on the ``meta`` device then never holds two copies of the
            weights (:func:`painter_seg.build.build_model` does this).

    Raises:
        CheckpointError: unreadable or unsafe file; CheckpointMismatchError: keys or shapes differ (strict).
    """
    if assign and not strict:
        raise ValueError("assign=True needs strict=True (every parameter must come from the checkpoint)")
    sd, meta = read_state_dict(source)
    own = model.state_dict()
    sd, resampled, rows = fit_rel_pos(model, sd)
    if strict:
        check_state_dict(model, sd, str(source), model_name)
    else:
        sd = {k: v for k, v in sd.items() if k in own and v.shape == own[k].shape}
    if assign:
        sd = {k: v.to(own[k].dtype).contiguous() for k, v in sd.items()}
    model.load_state_dict(sd, strict=strict, assign=assign)
    return LoadReport(str(source), meta["layout"], len(sd), sum(v.numel() for v in sd.values()), meta,
                      resampled, tuple(rows))


# ---------------------------------------------------------------------------------------------- writing
def save_checkpoint(
    state_dict: Mapping[str, torch.Tensor],
    path: str | os.PathLike,
    layout: str = "safetensors",
    metadata: Mapping[str, str] | None = None,
    dtype: torch.dtype | None = None,
) -> Path:
    """Write ``state_dict`` (original key names) atomically in one of :data:`LAYOUTS`.

    ``original`` -> ``{"model": sd}`` via torch.save (any suffix, conventionally ``.pth``); ``hf`` -> a
    transformers-named safetensors file (if ``path`` is a directory or has no suffix: ``<path>/model.safetensors``);
    ``safetensors`` -> our file with ``metadata`` in the header. ``dtype`` optionally casts floating tensors.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    path = Path(path)
    sd = {k: v.detach().cpu().contiguous() for k, v in clean_state_dict(state_dict).items()}
    if dtype is not None:
        sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    if layout == "hf" and (path.is_dir() or path.suffix == ""):
        path = path / "model.safetensors"
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a checkpoint file")
    ensure_output_dir(path.parent)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        if layout == "original":
            torch.save({"model": sd}, tmp)
        elif layout == "hf":
            save_file(original_to_hf(sd), str(tmp), metadata={"format": "pt"})
        else:
            meta = {"format": "painter_seg", **{k: str(v) for k, v in (metadata or {}).items()}}
            save_file(sd, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def weights_fingerprint(model: nn.Module) -> str:
    """Short, stable fingerprint of a model's weights (sha256 over names, shapes and values), for artefacts
    that only make sense with one set of weights (e.g. a tuned prompt). The painting network's weights only: a
    region matcher (``matcher.*``) never enters the forward, so adding or retraining it keeps the fingerprint."""
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        if k.startswith("matcher."):
            continue
        h.update(k.encode())
        h.update(json.dumps(list(v.shape)).encode())
        h.update(v.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
