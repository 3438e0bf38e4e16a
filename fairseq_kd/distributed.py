"""Small collectives over fairseq's data-parallel group that also work on CPU (gloo).

fairseq's own ``all_gather_list`` allocates ``torch.cuda.ByteTensor`` buffers, so it
cannot run on CPU; these helpers use plain ``torch.distributed`` calls on the group
fairseq trains with, and are no-ops in a single process.
"""
from typing import List, Optional

import torch
import torch.distributed as dist


def _group():
    from fairseq.distributed import utils as dist_utils

    return dist_utils.get_data_parallel_group()


def world_size() -> int:
    """Data-parallel workers (1 without torch.distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    from fairseq.distributed import utils as dist_utils

    return dist_utils.get_data_parallel_world_size()


def rank() -> int:
    """This worker's data-parallel rank (0 without torch.distributed)."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0
    from fairseq.distributed import utils as dist_utils

    return dist_utils.get_data_parallel_rank()


def all_gather_cat(values: torch.Tensor, device: Optional[torch.device] = None) -> torch.Tensor:
    """Concatenate every worker's 1-D tensor (lengths may differ), in rank order.  # n_r -> sum_r n_r

    ``device`` is where the collective runs (the backend's device: CUDA for nccl, CPU for
    gloo); the result is on ``values``' device.
    """
    if world_size() == 1:
        return values
    group = _group()
    dev = device or values.device
    local = values.detach().reshape(-1).to(dev)
    n = torch.tensor([local.numel()], dtype=torch.long, device=dev)
    sizes: List[torch.Tensor] = [torch.zeros_like(n) for _ in range(world_size())]
    dist.all_gather(sizes, n, group=group)
    longest = int(max(int(s) for s in sizes))
    padded = torch.zeros(longest, dtype=local.dtype, device=dev)
    padded[: local.numel()] = local
    parts = [torch.zeros_like(padded) for _ in sizes]
    dist.all_gather(parts, padded, group=group)
    out = torch.cat([p[: int(s)] for p, s in zip(parts, sizes)])
    return out.to(values.device)


def backend_device() -> torch.device:
    """The device collectives need: CUDA under nccl, else CPU."""
    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
