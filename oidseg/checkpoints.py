"""Checkpoints that cannot run code on load (issue 13, item 3).

Every ``.pth`` this workflow reads -- a user-given model checkpoint
(``models.<M>.checkpoint``), ImageNet backbone weights (``pretrained``), a
previous stage's final weights (``--load-from``), a periodic checkpoint of
the work dir (resume) -- is read with ``torch.load(weights_only=True)``:
tensors and plain Python data only, so a crafted pickle (a ``__reduce__``
payload) is refused instead of executed. No extra global is allow-listed:
our periodic checkpoints are written as plain data (see
:mod:`oidseg.train_hooks`), and our final weights hold only a state_dict
and a plain ``meta`` dict.

A state_dict that does not fit the model is an error naming the file and
some missing / unexpected / mis-shaped keys, not mmengine's warning
followed by a silently random-initialised model.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

from oidseg.errors import InputError

# Keys a pretrained ImageNet backbone file may lack (DCN offsets start at
# zero as in the original; old files have no BN counters) or carry in
# excess (the classifier of torchvision / timm ResNets).
BACKBONE_MAY_MISS = (r"(^|\.)num_batches_tracked$", r"(^|\.)conv_offset\.")
BACKBONE_MAY_EXTRA = (r"^fc\.", r"(^|\.)num_batches_tracked$")
SHOWN_KEYS = 5


def force_weights_only_load() -> None:
    """Make every ``torch.load`` of this process weights-only, including the
    ones inside mmengine (``Runner.resume``), whatever the caller passes
    (torch's ``TORCH_FORCE_WEIGHTS_ONLY_LOAD``)."""
    os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"


def _unsafe_detail(message: str) -> str:
    """What a refused pickle would have done, from torch's message: the
    global it would call ("posix.system"), else torch's own reason."""
    found = re.search(r"GLOBAL ([\w.]+)", message)
    if found:
        return f"loading it would call {found.group(1)}"
    found = re.search(r"Unsupported [^\n]*?(?= was not an allowed|\. |\n|$)", message)
    return found.group(0) if found else message.strip().splitlines()[0]


def _looks_like_checkpoint(path: Path) -> bool:
    """torch's zip format, or a legacy pickle (protocol 2+ starts with 0x80)."""
    import zipfile

    with open(path, "rb") as fh:
        head = fh.read(2)
    return zipfile.is_zipfile(path) or head[:1] == b"\x80" or head == b"PK"


def load_checkpoint(path: str | Path, *, kind: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; a missing,
    truncated, foreign or code-carrying file raises :class:`InputError`
    naming it and saying which of these it is."""
    import torch

    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: {kind} is a directory, not a file")
    if not path.is_file():
        raise InputError(f"{path}: {kind} is missing")
    if not _looks_like_checkpoint(path):
        raise InputError(f"{path}: {kind} is not a PyTorch checkpoint (neither torch's zip format "
                         "nor a pickle)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        message = str(exc)
        if "Weights only load failed" in message or "Unsupported" in message:
            raise InputError(
                f"{path}: {kind} holds more than tensors and plain data "
                f"({_unsafe_detail(message)}); refused: unpickling it could run code") from None
        raise InputError(f"{path}: {kind} is truncated or corrupt ({exc})") from None
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        raise InputError(f"{path}: {kind} is truncated or corrupt ({type(exc).__name__}: "
                         f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''})") from None


def nonfinite_tensors(state: Mapping[str, Any]) -> list[str]:
    """Names of the floating-point tensors of ``state`` holding a NaN or an inf."""
    import torch

    return [k for k, v in state.items()
            if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


def check_finite(state: Mapping[str, Any], path: str | Path, *, kind: str = "checkpoint") -> None:
    """:class:`InputError` when weights hold NaN or inf (a diverged training):
    such weights would give 0 detections with exit 0."""
    bad = nonfinite_tensors(state)
    if bad:
        shown = ", ".join(bad[:SHOWN_KEYS]) + (", ..." if len(bad) > SHOWN_KEYS else "")
        raise InputError(f"{path}: {kind} holds non-finite weights (NaN/inf) in {len(bad)} of "
                         f"{len(state)} tensors ({shown}): the training that wrote it diverged")


def state_dict_of(ckpt: Any, path: str | Path, *, kind: str = "checkpoint") -> dict:
    """The state_dict of a loaded checkpoint: ``{'state_dict': {...}, ...}``
    or a bare ``{name: tensor}``; a ``module.`` prefix (DDP) is dropped."""
    import torch

    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, Mapping) else None
    if (not isinstance(state, Mapping) or not state
            or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())):
        raise InputError(f"{path}: {kind} has no state_dict of tensors (expected {{name: tensor}} "
                         "or {'state_dict': {name: tensor}})")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    check_finite(state, path, kind=kind)
    return state


def backbone_part(state: Mapping[str, Any]) -> dict:
    """The backbone's weights of a state_dict: the ``backbone.`` entries
    (prefix dropped) of a detector or classifier file, else all entries."""
    if any(k.startswith("backbone.") for k in state):
        return {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    return dict(state)


def _matches(key: str, patterns: Iterable[str]) -> bool:
    return any(re.search(p, key) for p in patterns)


def fit_state_dict(module, state: Mapping[str, Any], path: str | Path, *, what: str,
                   may_miss: Iterable[str] = (), may_extra: Iterable[str] = ()) -> None:
    """Load ``state`` into ``module``: every key must exist with the same
    shape (except the patterns ``may_miss`` / ``may_extra``), otherwise
    :class:`InputError` naming ``path``, ``what`` and some offending keys."""
    own = module.state_dict()
    may_miss, may_extra = tuple(may_miss), tuple(may_extra)
    missing = [k for k in own if k not in state and not _matches(k, may_miss)]
    unexpected = [k for k in state if k not in own and not _matches(k, may_extra)]
    mis_shaped = [f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}"
                  for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mis_shaped:
        parts = []
        for name, keys in (("missing", missing), ("unexpected", unexpected),
                           ("shape mismatch", mis_shaped)):
            if keys:
                shown = ", ".join(keys[:SHOWN_KEYS]) + (", ..." if len(keys) > SHOWN_KEYS else "")
                parts.append(f"{len(keys)} {name}: {shown}")
        raise InputError(f"{path}: weights do not fit {what} ({'; '.join(parts)})")
    module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
