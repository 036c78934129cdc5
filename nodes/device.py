"""The host's device management for our plain torch modules."""

import contextlib

import comfy.model_management as mm
import comfy.utils
import torch


def compute_dtype(device: torch.device, stored: torch.dtype = torch.float32) -> torch.dtype:
    """Half precision on a GPU that supports it, float32 elsewhere. A module stored in bfloat16
    (Gemma, Qwen) stays bfloat16 on a GPU that has it: its values may overflow float16."""
    if device.type == "cuda" and stored == torch.bfloat16 and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if device.type == "cuda" and mm.should_use_fp16(device):
        return torch.float16
    return torch.float32


@contextlib.contextmanager
def on_compute_device(module: torch.nn.Module, half: bool = True):
    """Moves `module` to the host's compute device for the block and back to the offload device
    afterwards (also on error or interruption), freeing cached memory. Yields (device, dtype)."""
    device = mm.get_torch_device()
    original_dtype = next(module.parameters(), torch.empty(0)).dtype
    dtype = compute_dtype(device, original_dtype) if half else torch.float32
    offload = mm.unet_offload_device()
    module.to(device=device, dtype=dtype)
    try:
        yield device, dtype
    finally:
        module.to(device=offload, dtype=original_dtype)
        mm.soft_empty_cache()


def check_interrupt() -> None:
    mm.throw_exception_if_processing_interrupted()


class HostProgress:
    """A `progress(done, total)` callback for plain code: the host's progress bar (a new bar when the
    total changes, e.g. per window or per stage), and interruption."""

    def __init__(self):
        self.bar = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None or self.bar.total != total:
            self.bar = comfy.utils.ProgressBar(total)
        self.bar.update_absolute(done, total)
        check_interrupt()
