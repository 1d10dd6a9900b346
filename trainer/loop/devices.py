"""Where a job computes and in what: the device, the compute dtype, TF32, and the memory it held."""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class Precision:
    device: torch.device
    dtype: torch.dtype  # the compute dtype (autocast); the weights stay fp32
    reason: str  # why: recorded in result.json


def resolve_precision(precision: str) -> Precision:
    """The device and the compute dtype `precision` means here.

    auto: bf16 on a GPU that runs it natively (compute capability 8.0 and later: A100, RTX 30xx,
    L4, H100), fp16 with the GradScaler below that (V100, T4, RTX 20xx: their autocast accepts
    bf16 but emulates it, far slower than fp16), fp32 on the CPU (bf16 trains faster there on CPUs
    with AMX, but `auto` keeps the CPU's results those of fp32, the same on every machine: bf16 is
    asked for by name). An explicit bf16 on a card without native bf16 runs, with a warning.
    """
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    card, native_bf16 = "", False
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        card = f"compute capability {major}.{minor}"
        native_bf16 = major >= 8
    if precision != "auto":
        reason = f"precision: {precision}"
        if precision == "bf16" and device.type == "cuda" and not native_bf16:
            log.warning("precision bf16 on a GPU of %s: it has no native bf16 (emulated: slower than fp16, which "
                        "precision auto would choose)", card)
            reason += f" (emulated: {card} has no native bf16)"
        return Precision(device, DTYPES[precision], reason)
    if device.type == "cpu":
        return Precision(device, torch.float32, "auto: fp32 on the CPU")
    if native_bf16:
        return Precision(device, torch.bfloat16, f"auto: bf16, native on {card}")
    return Precision(device, torch.float16, f"auto: fp16 with loss scaling ({card} has no native bf16)")


def set_tf32() -> None:
    """fp32 means fp32: matrix products in IEEE fp32, not TF32, on Ampere and later too (torch's
    own default, set here so no library changes it behind the job's back), so an fp32 job gives
    the same numbers on every generation. Speed on those cards is bf16's job (`auto`)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def peak_memory_mb(device: torch.device) -> float:
    """This session's peak. On a GPU: what the caching allocator reserved at most, the memory the
    job held on the card (allocated tensors and the allocator's cache), which is what a neighbour
    on the same GPU cannot have; without the CUDA context (about 0.5 GiB a process, nvidia-smi
    shows it). On the CPU: the process's peak resident memory."""
    if device.type == "cuda":
        return torch.cuda.max_memory_reserved(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
