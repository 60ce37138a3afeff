"""torchrun support: one process per device, rank 0 alone logs and writes.

``edgekd run``/``edgekd distill`` started under ``torchrun --nproc_per_node N`` call :func:`init` once;
the trainer wraps the model in DistributedDataParallel and shards the data with a DistributedSampler.
"""

from __future__ import annotations

import os


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_distributed() -> bool:
    return world_size() > 1


def is_main() -> bool:
    return rank() == 0


def init() -> None:
    """Initialise the process group (NCCL on GPU, gloo on CPU) when launched by torchrun."""
    if not is_distributed():
        return
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend)


def barrier() -> None:
    if is_distributed():
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()


def shutdown() -> None:
    if is_distributed():
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
