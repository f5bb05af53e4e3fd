"""Process-wide settings that make training on the CPU fast (BENCHMARKS.md, "Framework overhead").

Written by hand: neither torch nor Lightning sets them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Mapping
from typing import Any

import torch

# glibc's mallopt() parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_LARGEST_HEAP_BLOCK = 32 * 2**20  # glibc's upper limit for the mmap threshold on 64-bit systems
_KEEP_FREE = 2**30


def keep_freed_memory() -> bool:
    """Let glibc keep freed blocks of up to 32 MiB in the process's heap for the next step.

    By default glibc serves a large allocation with its own ``mmap`` and returns it to the
    kernel when freed (and trims the heap top), so a training step that allocates and frees its
    activations every step page-faults every page of them in again: measured, the conv net's
    plain training loop ran 20 % slower (BENCHMARKS.md). After this call freed memory is
    reused instead; the process keeps up to 1 GiB of it rather than giving it back.

    Returns False (and changes nothing) where the C library is not glibc.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _LARGEST_HEAP_BLOCK)) and bool(mallopt(_M_TRIM_THRESHOLD, _KEEP_FREE))


def use_cpu_settings(cfg: Mapping[str, Any]) -> None:
    """Apply a run's CPU settings to this process (``flush_denormal``, ``keep_freed_memory`` in
    ``conf/train.yaml``): training, and evaluating or sampling a trained run, which composes that
    run's config. A config without them (a run from an older vae_zoo) changes nothing."""
    if cfg.get("flush_denormal"):
        torch.set_flush_denormal(True)  # returns False (and does nothing) on CPUs without the mode
    if cfg.get("keep_freed_memory"):
        keep_freed_memory()  # returns False (and does nothing) without glibc
