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


def training_threads(requested: int | None) -> tuple[int | None, str]:
    """Intra-op threads for this process, and why: ``train.threads`` when set; else ``OMP_NUM_THREADS`` when
    set (torch already follows it); else this process's share of the cores (divided among torchrun's local
    processes) minus what other programs keep busy (the 1-minute load average) — torch's default of every core
    on a busy machine makes each step several times slower."""
    if requested:
        return int(requested), f"{requested} (train.threads)"
    if os.environ.get("OMP_NUM_THREADS"):
        return None, f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    share = max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    n = max(1, min(share, round(cores - busy)))
    return n, f"{n} of {cores} cores (auto: load average {busy:.1f}, {cores // share} process(es) per machine)"


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
