"""Training one model on several processes (torchrun): FSDP2 sharding and the few collectives the
train stage needs.

Under `torchrun --nproc-per-node N`, every decoder layer and then the whole model go through
`fully_shard`: each parameter becomes a DTensor split by rows (dim 0) over the N processes.
The train stage keeps everything that belongs to a parameter (its mask, its trainable indices,
its fp32 master entries and their optimizer state) in that parameter's own shard: a process
owns the same rows of a mask as of the weight, so sparse optimizer state is sharded exactly as
the parameters are. Gradients are reduce-scattered as sums, not means, because the loss is
already divided by the step's response tokens over all processes.

With one process every function here is the identity (or a no-op), so the train stage runs the
same code either way. The backend is NCCL on GPUs and gloo on CPUs.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Iterable
from typing import NoReturn

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from lota.core.errors import UserError


def launched_processes() -> int:
    """How many processes torchrun started for this job (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def relaunch_under_torchrun(processes: int, module: str) -> NoReturn:
    """Replace this process by torchrun running `module`, with the same arguments, in `processes`
    processes on this machine."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    os.execv(sys.executable, [*launcher, "-m", module, *sys.argv[1:]])


def start(device_type: str) -> torch.device:
    """Join torchrun's process group if there is one; the device this process computes on."""
    if launched_processes() == 1:
        return torch.device(device_type)
    die_with_launcher()
    if device_type == "cuda":
        local_rank = int(os.environ["LOCAL_RANK"])
        if local_rank >= torch.cuda.device_count():
            raise UserError(
                f"torchrun started {os.environ['LOCAL_WORLD_SIZE']} processes on this machine"
                f" but it has {torch.cuda.device_count()} GPUs"
            )
        torch.cuda.set_device(local_rank)
        on = torch.device("cuda", local_rank)
    else:
        on = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if on.type == "cuda" else "gloo")
    return on


def die_with_launcher() -> None:
    """Have the kernel kill this process when torchrun dies.

    torchrun starts its workers in sessions of their own and cannot pass on a SIGKILL, so a
    killed job would leave its workers training, racing the rerun for the same checkpoint and
    outputs. (Linux only; elsewhere a killed launcher's workers run on.)
    """
    if sys.platform != "linux":
        return
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1:  # the launcher died before the request was made
        os.kill(os.getpid(), signal.SIGKILL)


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def is_sharded() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_sharded() else 0


def world_size() -> int:
    return dist.get_world_size() if is_sharded() else 1


def is_main() -> bool:
    return rank() == 0


def shard_model(model: torch.nn.Module, layers: Iterable[torch.nn.Module], on: torch.device) -> None:
    """fully_shard each decoder layer, then the rest (embeddings, final norm, output layer)."""
    mesh = init_device_mesh(on.type, (world_size(),))
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    for module in model.modules():
        if isinstance(module, FSDPModule):
            # Sum, not mean: each process's loss is already divided by the whole step's tokens.
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)  # gloo has no pre-multiplied sum


@torch.no_grad()
def local_part(tensor: torch.Tensor) -> torch.Tensor:
    """This process's shard of a sharded tensor (a view, sharing its storage); others as they are."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def shard_like(full: torch.Tensor, parameter: torch.Tensor) -> torch.Tensor:
    """This process's part of `full`, a tensor of `parameter`'s shape, split as the parameter is."""
    if not isinstance(parameter, DTensor):
        return full
    # src_data_rank None: every process holds `full` already, so no data is sent.
    sharded = distribute_tensor(full, parameter.device_mesh, parameter.placements, src_data_rank=None)
    return sharded.to_local()


def gather_full(local: torch.Tensor, parameter: torch.Tensor) -> torch.Tensor:
    """The whole tensor from every process's `local` part, split as `parameter` is (collective)."""
    if not isinstance(parameter, DTensor):
        return local
    sharded = DTensor.from_local(
        local, parameter.device_mesh, parameter.placements, shape=parameter.shape, stride=parameter.stride()
    )
    return sharded.full_tensor()


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """A sharded tensor gathered whole on every process (collective); others as they are."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def barrier() -> None:
    """Wait until every process gets here (collective)."""
    if is_sharded():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` summed over the processes, in place (collective)."""
    if is_sharded():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def total(value: float) -> float:
    """A number summed over the processes (collective)."""
    if not is_sharded():
        return value
    on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    return float(all_reduce_sum(torch.tensor([value], dtype=torch.float64, device=on))[0])
