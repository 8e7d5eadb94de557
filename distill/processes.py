"""The processes of a run under Hugging Face Accelerate: which process this is, on which
device, and the few collective calls the training loop makes.

``accelerate launch -m distill ...`` starts several processes (GPUs, nodes, or CPU
processes over gloo); run plainly, there is one. Every helper here returns at once on one
process, without a collective call, so a single-process run computes exactly what it
would without Accelerate.
"""

from __future__ import annotations

import os

import torch

from distill.errors import DistillError


def accelerator(**kwargs):
    """The Accelerator for this process; refuses a multi-process launch it cannot join.

    ``accelerate launch --multi_gpu`` on a machine without GPUs starts N processes that
    each see one process: they would train N copies into the same folder.
    """
    from accelerate import Accelerator

    acc = Accelerator(**kwargs)
    check_world(acc.num_processes)
    return acc


def process_state():
    """Accelerate's process facts (rank, world size, device) without an Accelerator."""
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    state = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))  # as Accelerator() reads it
    check_world(state.num_processes)
    return state


def check_world(num_processes: int) -> None:
    """Refuse a launch whose processes did not all join (``WORLD_SIZE`` says how many were started)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and num_processes != world:
        raise DistillError(
            f"launched as {world} processes but Accelerate joined {num_processes}: no GPU for them; "
            f"for CPU processes set ACCELERATE_USE_CPU=1 before `accelerate launch`")


def use_fast_matmul(device) -> None:
    """TF32 matrix products on a CUDA GPU (what transformers' Trainer calls ``tf32``): several
    times faster fp32 training on Ampere and later, with a 10-bit mantissa in the products."""
    if torch.device(device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def agree(acc, *values: float) -> list[float]:
    """Sum a few numbers over all processes (one all-reduce); on one process, return them."""
    if acc.num_processes == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=acc.device)
    return acc.reduce(t, reduction="sum").tolist()


def broadcast(acc, obj):
    """The main process's ``obj`` on every process."""
    if acc.num_processes == 1:
        return obj
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([obj])[0]


def gather(acc, obj) -> list:
    """Every process's ``obj``, in process order, on every process (``[obj]`` on one)."""
    if acc is None or acc.num_processes == 1:
        return [obj]
    from accelerate.utils import gather_object

    return gather_object([obj])


def to_device(batch: dict, device) -> dict:
    """The batch's tensors on ``device`` (other values as they are)."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
