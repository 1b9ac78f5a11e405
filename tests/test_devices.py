"""Device names and memory, read without torch (aimbench.devices)."""

from __future__ import annotations

import os

import pytest

from aimbench.devices import cuda_device_count, device_memory_bytes, parse_device


def test_a_cpu_run_is_budgeted_with_this_machines_memory() -> None:
    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert device_memory_bytes(parse_device("cpu")) == ram > 0
    if not cuda_device_count():  # auto runs on the CPU here
        assert device_memory_bytes(parse_device("auto")) == ram


def test_a_gpu_the_driver_cannot_show_has_no_memory_to_budget_with() -> None:
    if cuda_device_count():
        pytest.skip("a CUDA GPU is here: its memory is the driver's")
    assert device_memory_bytes(parse_device("cuda")) is None and device_memory_bytes(parse_device("mps")) is None
