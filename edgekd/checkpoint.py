"""The one safe loader and the one atomic saver of weights and training checkpoints.

* Weights are read from safetensors, or with ``torch.load(weights_only=True)`` and **no fallback**:
  a pickle that would run code is refused. No environment variable changes this (we always pass
  ``weights_only=True`` explicitly, which overrides ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``).
* Every save goes through :mod:`deploy.fileio` (temp file, fsync, rename).
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

from edgekd.deploy.errors import InputFileError, SecurityError
from edgekd.deploy.fileio import atomic_write, atomic_write_via
from edgekd.deploy.runtime.intake import check_file

SAFETENSORS_SUFFIXES = (".safetensors",)


def _torch_load(path: Path):
    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" not in str(exc).lower():  # garbage bytes, not an attempt to import something
            raise InputFileError(f"{path} is not a readable PyTorch checkpoint (not a valid pickle/zip)",
                                 hint="the file may be truncated or of another format; re-save it") from None
        raise SecurityError(
            f"{path} holds Python objects that a weights-only load refuses: {str(exc).splitlines()[0]}",
            hint="save plain tensors (model.state_dict()) or safetensors; edgekd never unpickles code") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise InputFileError(f"{path} is not a readable PyTorch checkpoint: {str(exc).splitlines()[0]}",
                             hint="the file may be truncated or of another format; re-save it") from None


def load_tensors(path: str | os.PathLike) -> dict:
    """Load a state dict (or a checkpoint dict) safely from safetensors or a weights-only torch file."""
    path = check_file(path, "checkpoint")
    if path.suffix in SAFETENSORS_SUFFIXES:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise InputFileError(f"{path} is not a valid safetensors file: {exc}") from None
    return _torch_load(path)


def extract_state_dict(obj) -> dict:
    """Accept a bare state dict or the usual wrappers (``state_dict``, ``model``, ``model_state``)."""
    if isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state", "model_state_dict"):
            if key in obj and isinstance(obj[key], dict):
                return extract_state_dict(obj[key])
        sd = {k.removeprefix("module."): v for k, v in obj.items()}
        return sd
    raise InputFileError(f"checkpoint holds a {type(obj).__name__}, expected a state dict")


def load_weights(model, path: str | os.PathLike, strict: bool = True) -> None:
    """Load weights into ``model`` with a clear error for missing/unexpected keys and shape mismatches."""
    import torch

    state = extract_state_dict(load_tensors(path))
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and isinstance(state[k], torch.Tensor)
              and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es), first {shapes[0]}")
    if strict and missing:
        problems.append(f"{len(missing)} missing key(s), e.g. {missing[:3]}")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[:3]}")
    if problems:
        raise InputFileError(f"checkpoint {path} does not fit the model: " + "; ".join(problems),
                             hint="check the model name/kwargs (and num_classes) in the recipe")
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=strict)


def save_weights(model_or_state, path: str | os.PathLike) -> Path:
    """Save weights as safetensors (``.safetensors``) or a plain tensor dict (``.pt``), atomically."""
    import torch

    from edgekd.deploy.export import check_finite_weights

    if isinstance(model_or_state, torch.nn.Module):
        check_finite_weights(model_or_state)
        state = model_or_state.state_dict()
    else:
        state = model_or_state
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    path = Path(path)
    if path.suffix in SAFETENSORS_SUFFIXES:
        from safetensors.torch import save_file

        return atomic_write_via(path, lambda tmp: save_file(state, str(tmp)))
    return save_object(state, path)


def save_object(obj, path: str | os.PathLike) -> Path:
    """``torch.save`` of tensors and plain containers, atomically (loadable with weights_only=True)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue())
    return Path(path)


# ------------------------------------------------------------------------------------------ RNG states
def rng_state() -> dict:
    """Python, NumPy, torch (and CUDA) RNG states as tensors and plain values (weights_only-loadable)."""
    import random

    import numpy as np
    import torch

    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {"torch": torch.get_rng_state(), "python": list(py_state), "python_version": py_version,
            "python_gauss": py_gauss, "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
            "numpy_pos": int(np_state[2]),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` captured."""
    import random

    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
