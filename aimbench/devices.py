"""``--device`` values, checked without importing torch.

A misspelt device or a GPU that is not there used to surface as a torch message after the data
and the model had loaded. Here the name is parsed by hand and a CUDA device is counted through
the driver library itself (``libcuda``, the one torch's CUDA build loads), which takes
milliseconds instead of a torch import: a command fails on its first line, before any work.

The count is what the driver sees through ``CUDA_VISIBLE_DEVICES``, like torch's. Where the
driver library cannot answer (an AMD machine running torch's ROCm build, which also calls its
GPUs ``cuda``), the check is left to :func:`aimbench.provenance.resolve_device`, which asks
torch once it is imported anyway.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from dataclasses import dataclass

from aimbench.errors import UserError

DEVICE_FORMS = "auto, cpu, cuda, cuda:N or mps"
_CUDA_LIBRARIES = ("libcuda.so.1", "libcuda.so", "nvcuda.dll")
_ROCM_DEVICE = "/dev/kfd"  # present where AMD GPUs are driven by ROCm


@dataclass(frozen=True)
class DeviceName:
    """A parsed ``--device``: its type and, for ``cuda:N``, the index."""

    kind: str  # auto | cpu | cuda | mps
    index: int | None = None

    def __str__(self) -> str:
        return self.kind if self.index is None else f"{self.kind}:{self.index}"


def parse_device(name: str) -> DeviceName:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; anything else is a user error."""
    kind, colon, index = name.strip().lower().partition(":")
    if kind in ("auto", "cpu", "cuda", "mps") and not colon:
        return DeviceName(kind)
    if kind == "cuda" and index.isdigit():
        return DeviceName(kind, int(index))
    raise UserError(f"unknown --device '{name}'; use {DEVICE_FORMS}")


def _cuda_driver() -> ctypes.CDLL | None:
    """The CUDA driver library (not yet initialised), or None where none is installed."""
    for library in _CUDA_LIBRARIES:
        try:
            return ctypes.CDLL(library)
        except OSError:
            continue
    return None


def cuda_device_count() -> int | None:
    """CUDA devices the driver sees (0 without a driver); None where only torch can tell (ROCm)."""
    driver = _cuda_driver()
    if driver is None:
        return None if os.path.exists(_ROCM_DEVICE) else 0
    count = ctypes.c_int(0)
    if driver.cuInit(0) != 0 or driver.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0  # a driver without a usable GPU (e.g. CUDA_VISIBLE_DEVICES='')
    return count.value


def mps_available() -> bool:
    """Apple-silicon GPUs (torch's ``mps``) exist only on arm64 macOS."""
    return sys.platform == "darwin" and platform.machine() == "arm64"


def unavailable(device: DeviceName, cuda_count: int | None) -> str | None:
    """Why ``device`` cannot be used on a machine with ``cuda_count`` CUDA devices, or None."""
    if device.kind == "mps" and not mps_available():
        return "--device mps needs an Apple-silicon Mac; use cpu"
    if device.kind != "cuda" or cuda_count is None:
        return None
    if cuda_count == 0:
        return f"--device {device} but this machine has no CUDA GPU; use cpu or auto"
    if device.index is not None and device.index >= cuda_count:
        return f"--device cuda:{device.index} but this machine has {cuda_count} CUDA GPU(s) (cuda:0 to cuda:{cuda_count - 1})"
    return None


def _cuda_total_memory(index: int) -> int | None:
    """Bytes of CUDA device ``index`` as the driver reports them; None where the driver cannot tell."""
    driver = _cuda_driver()
    handle, total = ctypes.c_int(0), ctypes.c_size_t(0)
    if driver is None or driver.cuInit(0) != 0 or driver.cuDeviceGet(ctypes.byref(handle), index) != 0:
        return None
    return total.value if driver.cuDeviceTotalMem_v2(ctypes.byref(total), handle) == 0 else None


def device_memory_bytes(device: DeviceName) -> int | None:
    """All the memory of the device a run will use: a CUDA GPU's (``auto`` is one where the driver
    sees one), else this machine's RAM; None where neither the driver nor the OS can tell (ROCm,
    Apple's unified memory)."""
    if device.kind == "mps":
        return None
    count = cuda_device_count() if device.kind in ("cuda", "auto") else 0
    if device.kind == "cuda" or (device.kind == "auto" and count):
        return _cuda_total_memory(device.index or 0) if count else None
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows)
        return None


def require_device(name: str) -> DeviceName:
    """Parse ``name`` and check that this machine has it; ``auto`` and ``cpu`` always do."""
    device = parse_device(name)
    problem = unavailable(device, cuda_device_count() if device.kind == "cuda" else 0)
    if problem:
        raise UserError(problem)
    return device
