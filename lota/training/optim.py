"""Parameter updates for the train stage: sparse optimizer state, and the optimizer run inside
the backward pass.

Every trained parameter gets a `Slot`: the entries it trains (all of them, or flat indices fixed
at the start and kept on the parameter's device), an fp32 master tensor of just those entries,
and a torch optimizer of its own over that master, so optimizer state has exactly the trainable
entries' size. After an update the master is written back into the parameter at the indices and
nowhere else: frozen entries stay bit-identical to the base under any optimizer, weight decay
or momentum. A fully trained fp32 parameter is its own master (no copy).

With `in_backward`, a parameter is updated by a post-accumulate-grad hook as soon as its gradient
is complete, and the gradient is dropped at once, so no full gradient buffer ever exists. That
needs each gradient to be final when it arrives and to be clipped on its own, so gradient
accumulation over several micro-batches and global-norm clipping take the plain path instead:
gradients are kept until `step()`.

Sharded over several processes (lota.core.distributed), a slot holds only its parameter's local
shard: the trainable indices are flat positions in that shard, and the master entries and their
optimizer state are those of the shard. Gradient norms are summed over the processes before
clipping, so clipping sees each tensor's whole norm. FSDP2 writes sharded gradients after the
backward pass, so sharded training always takes the plain path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from lota.core.distributed import all_reduce_sum, is_sharded, local_part, shard_like
from lota.core.errors import UserError
from lota.deltas.sparse import index_dtype

OPTIMIZERS = ("adamw", "rmsprop")
CLIP_MODES = ("per_tensor", "global", "none")


@dataclass
class Slot:
    name: str
    parameter: torch.nn.Parameter
    values: torch.Tensor  # the parameter's entries held by this process: all of them, or its shard
    indices: torch.Tensor | None  # flat trainable entries of `values`; None trains every entry
    master: torch.Tensor  # fp32 values of the trainable entries, which the optimizer updates
    optimizer: torch.optim.Optimizer

    @property
    def trainable_count(self) -> int:
        return self.master.numel()


def make_optimizer(kind: str, master: torch.Tensor, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if kind == "adamw":
        return torch.optim.AdamW([master], lr=lr, weight_decay=weight_decay, fused=True)
    if kind == "rmsprop":
        return torch.optim.RMSprop([master], lr=lr, alpha=0.99, momentum=0.0, weight_decay=weight_decay)
    raise UserError(f"unknown optimizer {kind!r}; known: {', '.join(OPTIMIZERS)}")


def make_slots(
    chosen: Sequence[tuple[str, torch.nn.Parameter, torch.Tensor | None]],
    kind: str,
    lr: float,
    weight_decay: float,
    fp32_values: Callable[[str], torch.Tensor],
) -> list[Slot]:
    """A slot per (name, parameter, flat trainable indices of its local values, or None for all).

    `fp32_values(name)` gives a parameter's full-precision starting values; it is asked only for
    parameters kept in a lower precision (bf16 weights), whose own values are rounded.
    """
    slots = []
    for name, parameter, indices in chosen:
        values = local_part(parameter)
        if indices is None and parameter.dtype == torch.float32:
            # The parameter (or its shard, a leaf view of the parameter's storage) is its own master.
            master = values
        else:
            source = values.detach() if parameter.dtype == torch.float32 else shard_like(fp32_values(name), parameter)
            source = source.to(values.device, torch.float32)
            if indices is None:
                master = source.clone().view(values.shape)
            else:
                indices = indices.to(values.device, index_dtype(values.numel()))
                master = source.reshape(-1)[indices]  # indexing copies
        optimizer = make_optimizer(kind, master, lr, weight_decay)
        slots.append(Slot(name, parameter, values, indices, master, optimizer))
    return slots


class ParameterUpdater:
    """Applies the optimizer to every slot, inside the backward pass or after it.

    Per optimizer step: `set_lr`, the step's backward passes, then `step()`, which returns the
    global gradient norm before clipping.
    """

    def __init__(self, slots: Sequence[Slot], clip: str, max_grad_norm: float, in_backward: bool):
        if clip not in CLIP_MODES:
            raise UserError(f"clip must be one of {', '.join(CLIP_MODES)}, got {clip!r}")
        if in_backward and clip == "global":
            raise UserError("global-norm clipping needs every gradient first: it cannot run inside the backward pass")
        self.slots = list(slots)
        self.clip = clip
        self.max_grad_norm = max_grad_norm
        self.in_backward = in_backward
        self._squared_norms: list[torch.Tensor] = []
        self._hooks = []
        if in_backward:
            for slot in self.slots:
                self._hooks.append(slot.parameter.register_post_accumulate_grad_hook(self._hook_for(slot)))

    def add(self, slots: Sequence[Slot]) -> None:
        """Train these slots too from the next step on (RoSA's mask, built after its warm-up)."""
        self.slots += slots
        if self.in_backward:
            for slot in slots:
                self._hooks.append(slot.parameter.register_post_accumulate_grad_hook(self._hook_for(slot)))

    @property
    def trainable_count(self) -> int:
        return sum(slot.trainable_count for slot in self.slots)

    def state_bytes(self) -> int:
        """Bytes of optimizer state (moments, square averages, step counters)."""
        return sum(
            value.numel() * value.element_size()
            for slot in self.slots
            for state in slot.optimizer.state.values()
            for value in state.values()
            if isinstance(value, torch.Tensor)
        )

    def overhead_bytes(self) -> int:
        """Bytes held besides the model and optimizer state: fp32 master copies and indices."""
        total = 0
        for slot in self.slots:
            if not slot.master.is_set_to(slot.values):
                total += slot.master.numel() * slot.master.element_size()
            if slot.indices is not None:
                total += slot.indices.numel() * slot.indices.element_size()
        return total

    def set_lr(self, lr: float) -> None:
        for slot in self.slots:
            for group in slot.optimizer.param_groups:
                group["lr"] = lr

    def remove_hooks(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def _hook_for(self, slot: Slot) -> Callable[[torch.Tensor], None]:
        def hook(parameter: torch.Tensor) -> None:
            grad = self._take_gradient(slot)
            (norm,) = self._norms([grad])
            if self.clip == "per_tensor":
                self._clip(grad, norm)
            self._apply(slot, grad)

        return hook

    @torch.no_grad()
    def step(self) -> float:
        """Finish the optimizer step; return the global gradient norm before clipping."""
        if not self.in_backward:
            taken = [(slot, self._take_gradient(slot)) for slot in self.slots if slot.parameter.grad is not None]
            norms = self._norms([grad for _, grad in taken])
            if self.clip == "per_tensor":
                for (_, grad), norm in zip(taken, norms, strict=True):
                    self._clip(grad, norm)
            elif self.clip == "global" and norms:
                scale = torch.clamp(self.max_grad_norm / (torch.stack(norms).norm() + 1e-6), max=1.0)
                torch._foreach_mul_([grad for _, grad in taken], scale)
            for slot, grad in taken:
                self._apply(slot, grad)
        total = float(torch.stack(self._squared_norms).sum().sqrt()) if self._squared_norms else 0.0
        self._squared_norms = []
        return total

    @torch.no_grad()
    def _take_gradient(self, slot: Slot) -> torch.Tensor:
        """The slot's gradient as fp32 of the master's shape; the parameter's own is dropped."""
        grad = local_part(slot.parameter.grad)
        slot.parameter.grad = None
        if slot.indices is not None:
            grad = grad.view(-1)[slot.indices]
        return grad.float()

    def _norms(self, grads: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Each gradient's norm, over every process's shard of it."""
        norms = [torch.linalg.vector_norm(grad) for grad in grads]
        if is_sharded() and norms:
            norms = list(all_reduce_sum(torch.stack(norms).square()).sqrt().unbind())
        self._squared_norms += [norm.square() for norm in norms]
        return norms

    def _clip(self, grad: torch.Tensor, norm: torch.Tensor) -> None:
        grad.mul_(torch.clamp(self.max_grad_norm / (norm + 1e-6), max=1.0))

    @torch.no_grad()
    def _apply(self, slot: Slot, grad: torch.Tensor) -> None:
        slot.master.grad = grad
        slot.optimizer.step()
        slot.master.grad = None
        write_back(slot)


@torch.no_grad()
def write_back(slot: Slot) -> None:
    """Write the slot's master entries into its parameter, at the trainable entries only."""
    if slot.master.is_set_to(slot.values):
        return
    values = slot.master.to(slot.values.dtype)
    if slot.indices is None:
        slot.values.copy_(values)
    else:
        slot.values.view(-1).index_put_((slot.indices,), values)
