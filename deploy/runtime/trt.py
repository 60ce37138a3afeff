"""TensorRT on the device: a runner with the OnnxrtRunner protocol, that refuses engines it cannot trust.

An engine only runs where it was built (same TensorRT version, same GPU), and an engine file can carry
code (plugins), so :class:`TrtRunner` loads an engine only when

* its sidecar JSON (``model.engine.json``, written by :mod:`deploy.engines.tensorrt`) is present and valid,
* the engine's SHA-256 matches the sidecar's,
* the installed TensorRT version and this GPU (name and compute capability) match the sidecar's.

Imports numpy, tensorrt and cuda-python only (lazily); never torch.

Example:
    >>> with TrtRunner("model.engine") as runner:  # doctest: +SKIP
    ...     logits = runner.infer({"input": x})["logits"]
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import subprocess
from pathlib import Path

import numpy as np

from edgekd.deploy.errors import (
    DependencyError,
    InputFileError,
    ResourceError,
    SecurityError,
    VerificationError,
)
from edgekd.deploy.runtime.runner import RunnerInfo, TensorSpec

log = logging.getLogger(__name__)

SIDECAR_FORMAT = "edgekd-tensorrt-engine"
SIDECAR_VERSION = 1
TRT_HINT = ("install it with: pip install 'edgekd[tensorrt]' (on a Jetson, use JetPack's TensorRT: "
            "sudo apt install python3-libnvinfer)")


class EngineMismatch(VerificationError):
    """The engine was built for another TensorRT version or GPU."""


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    """``model.engine`` → ``model.engine.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def tensorrt_module():
    """Import ``tensorrt`` or raise :class:`DependencyError` with the install hint."""
    try:
        import tensorrt
    except ImportError as exc:
        raise DependencyError(f"TensorRT engines need the Python package 'tensorrt', which is not installed "
                              f"({exc})", hint=TRT_HINT) from None
    return tensorrt


def cudart_module():
    """cuda-python's runtime API (``cuda.bindings.runtime`` in 12.6+, ``cuda.cudart`` before)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart
        except ImportError as exc:
            raise DependencyError(f"running TensorRT engines needs 'cuda-python' ({exc})",
                                  hint="install it with: pip install 'edgekd[tensorrt]'") from None
    return cudart


def gpu_info(device: int = 0) -> dict:
    """``{"name": str, "compute_capability": "8.7"}`` of a CUDA GPU, via cuda-python or nvidia-smi."""
    try:
        cudart = cudart_module()
        err, props = cudart.cudaGetDeviceProperties(device)
        if int(err) == 0:
            name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
            return {"name": name.strip("\x00 "), "compute_capability": f"{props.major}.{props.minor}"}
    except DependencyError:
        pass
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader",
                              f"--id={device}"], capture_output=True, text=True, timeout=10, check=True).stdout
        name, _, cc = out.strip().partition(",")
        return {"name": name.strip(), "compute_capability": cc.strip()}
    except (OSError, subprocess.SubprocessError):
        raise ResourceError("no CUDA GPU found (neither cuda-python nor nvidia-smi could query one)",
                            hint="TensorRT engines need an NVIDIA GPU") from None


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_sidecar(engine_path: str | os.PathLike) -> dict:
    """Read and validate the sidecar of ``engine_path``; a missing or foreign sidecar is refused."""
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise SecurityError(f"refusing to load {engine_path}: its sidecar {path.name} is missing",
                            hint="engines are loaded only with the sidecar written when they were built; "
                                 "rebuild with `edgekd engine`")
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputFileError(f"{path} is not valid JSON: {exc}", hint="rebuild the engine") from None
    missing = [k for k in ("format", "tensorrt", "gpu", "engine_sha256", "precision") if k not in meta]
    if meta.get("format") != SIDECAR_FORMAT or missing:
        raise SecurityError(f"refusing to load {engine_path}: {path.name} is not an edgekd engine sidecar"
                            + (f" (missing {missing})" if missing else ""), hint="rebuild with `edgekd engine`")
    return meta


def check_engine(engine_path: str | os.PathLike, engine_bytes: bytes, sidecar: dict, trt_version: str,
                 gpu: dict) -> None:
    """Refuse an engine whose checksum, TensorRT version or GPU differs from its sidecar's."""
    if sha256_bytes(engine_bytes) != sidecar["engine_sha256"]:
        raise SecurityError(f"refusing to load {engine_path}: its SHA-256 does not match its sidecar",
                            hint="the engine file was modified or replaced; rebuild it")
    if str(sidecar["tensorrt"]) != str(trt_version):
        raise EngineMismatch(f"{engine_path} was built with TensorRT {sidecar['tensorrt']}, this is "
                             f"TensorRT {trt_version}",
                             hint="engines run only on the TensorRT version that built them; rebuild it here "
                                  "(`edgekd engine` or the trtexec command it prints)")
    built = sidecar["gpu"]
    if (built.get("name"), str(built.get("compute_capability"))) != (gpu.get("name"),
                                                                     str(gpu.get("compute_capability"))):
        raise EngineMismatch(f"{engine_path} was built on {built.get('name')} (sm {built.get('compute_capability')}), "
                             f"this GPU is {gpu.get('name')} (sm {gpu.get('compute_capability')})",
                             hint="engines run only on the GPU model that built them; rebuild it on this device")


def _check(cudart, result):
    """cuda-python returns ``(err, *values)``; raise on error, return the value(s)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise ResourceError(f"CUDA call failed with error {err}")
    return values[0] if len(values) == 1 else values


class TrtRunner:
    """``with TrtRunner("m.engine") as r: r.infer({"input": x})`` — the :class:`Runner` protocol for TensorRT."""

    def __init__(self, engine_path: str | os.PathLike):
        self.engine_path = Path(engine_path)
        self.sidecar: dict | None = None
        self.engine = self.context = self.stream = None
        self._buffers: dict[str, tuple[int, int]] = {}

    def __enter__(self) -> TrtRunner:
        trt = tensorrt_module()
        self.cudart = cudart_module()
        self.sidecar = read_sidecar(self.engine_path)
        data = self.engine_path.read_bytes()
        check_engine(self.engine_path, data, self.sidecar, trt.__version__, gpu_info())
        self.trt = trt
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self._runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise InputFileError(f"TensorRT could not deserialize {self.engine_path}", hint="rebuild it")
        self.context = self.engine.create_execution_context()
        self.stream = _check(self.cudart, self.cudart.cudaStreamCreate())
        return self

    def __exit__(self, *exc) -> None:
        for ptr, _ in self._buffers.values():
            self.cudart.cudaFree(ptr)
        self._buffers.clear()
        if self.stream is not None:
            self.cudart.cudaStreamDestroy(self.stream)
        self.context = self.engine = self.stream = None

    def _names(self, mode) -> list[str]:
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        return [n for n in names if self.engine.get_tensor_mode(n) == mode]

    @property
    def input_names(self) -> list[str]:
        return self._names(self.trt.TensorIOMode.INPUT)

    @property
    def output_names(self) -> list[str]:
        return self._names(self.trt.TensorIOMode.OUTPUT)

    def inputs(self) -> list[TensorSpec]:
        """Input specs (dynamic axes named ``dim{i}``; the batch axis ``batch``), like the ORT runner's."""
        return [self._spec(n) for n in self.input_names]

    def outputs(self) -> list[TensorSpec]:
        return [self._spec(n) for n in self.output_names]

    def _spec(self, name: str) -> TensorSpec:
        dims = [int(d) for d in self.engine.get_tensor_shape(name)]
        shape = tuple(d if d >= 0 else ("batch" if i == 0 else f"dim{i}") for i, d in enumerate(dims))
        return TensorSpec(name, np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(name))).name, shape)

    def bind(self, feed: dict[str, np.ndarray]):
        """One timed call = copies in, the engine, copies out, stream synchronised (what an app pays)."""
        return functools.partial(self.infer, feed)

    def info(self) -> RunnerInfo:
        side = self.sidecar or {}
        return RunnerInfo(f"tensorrt {side.get('tensorrt', self.trt.__version__)}", ("TensorRT",), (), None,
                          "cuda", {"gpu": side.get("gpu"), "precision": side.get("precision")})

    def _device_buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                self.cudart.cudaFree(ptr)
            ptr = _check(self.cudart, self.cudart.cudaMalloc(max(nbytes, 1)))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Copy inputs to the GPU, run the engine, copy outputs back."""
        cudart, kind = self.cudart, self.cudart.cudaMemcpyKind
        staged = []  # host arrays stay alive until the stream is synchronised
        for name in self.input_names:
            if name not in feed:
                raise InputFileError(f"missing input '{name}'; the engine takes {self.input_names}")
            arr = np.ascontiguousarray(feed[name], dtype=self.trt.nptype(self.engine.get_tensor_dtype(name)))
            self.context.set_input_shape(name, arr.shape)
            staged.append(arr)
            ptr = self._device_buffer(name, arr.nbytes)
            _check(cudart, cudart.cudaMemcpyAsync(ptr, arr.ctypes.data, arr.nbytes,
                                                  kind.cudaMemcpyHostToDevice, self.stream))
            self.context.set_tensor_address(name, ptr)
        outputs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            outputs[name] = np.empty(shape, dtype=self.trt.nptype(self.engine.get_tensor_dtype(name)))
            self.context.set_tensor_address(name, self._device_buffer(name, outputs[name].nbytes))
        if not self.context.execute_async_v3(self.stream):
            raise VerificationError(f"TensorRT failed to run {self.engine_path}")
        for name, out in outputs.items():
            _check(cudart, cudart.cudaMemcpyAsync(out.ctypes.data, self._buffers[name][0], out.nbytes,
                                                  kind.cudaMemcpyDeviceToHost, self.stream))
        _check(cudart, cudart.cudaStreamSynchronize(self.stream))
        return outputs
