import pytest
import torch

from lota.core.errors import UserError
from lota.training.optim import ParameterUpdater, make_slots


def no_checkpoint(name):
    raise AssertionError(f"fp32 values of {name} were not needed")


def run_steps(updater, parameter, weights, steps=4):
    for step in range(steps):
        (parameter.float() * weights[step]).sum().backward()
        updater.step()


@pytest.mark.parametrize("kind", ["adamw", "rmsprop"])
@pytest.mark.parametrize("in_backward", [True, False])
def test_frozen_entries_are_never_written_and_state_is_sparse(kind, in_backward):
    torch.manual_seed(0)
    parameter = torch.nn.Parameter(torch.randn(6, 5))
    before = parameter.detach().clone()
    indices = torch.tensor([0, 7, 12, 29])
    slots = make_slots([("w", parameter, indices)], kind, lr=1e-2, weight_decay=0.1, fp32_values=no_checkpoint)
    updater = ParameterUpdater(slots, "per_tensor", 1.0, in_backward=in_backward)
    run_steps(updater, parameter, torch.randn(4, 6, 5))
    frozen = torch.ones(30, dtype=torch.bool)
    frozen[indices] = False
    now, then = parameter.detach().view(-1), before.view(-1)
    assert torch.equal(now[frozen], then[frozen])
    assert (now[indices] != then[indices]).all()
    assert parameter.grad is None and updater.trainable_count == 4
    state = slots[0].optimizer.state[slots[0].master]
    assert {t.numel() for t in state.values() if torch.is_tensor(t)} <= {1, 4}
    assert slots[0].indices.dtype == torch.int32


def test_sparse_state_matches_a_dense_optimizer_on_masked_gradients():
    torch.manual_seed(1)
    dense = torch.nn.Parameter(torch.randn(4, 4))
    masked = torch.nn.Parameter(dense.detach().clone())
    indices = torch.tensor([1, 5, 6])
    keep = torch.zeros(16)
    keep[indices] = 1
    reference = torch.optim.AdamW([dense], lr=1e-2, weight_decay=0.0)
    slots = make_slots([("w", masked, indices)], "adamw", lr=1e-2, weight_decay=0.0, fp32_values=no_checkpoint)
    updater = ParameterUpdater(slots, "none", 1.0, in_backward=True)
    weights = torch.randn(3, 4, 4)
    for step in range(3):
        (dense * weights[step]).sum().backward()
        dense.grad.mul_(keep.view(4, 4))
        reference.step()
        reference.zero_grad()
        (masked * weights[step]).sum().backward()
        updater.step()
    assert torch.allclose(masked.detach().view(-1)[indices], dense.detach().view(-1)[indices], atol=1e-7)


def test_bf16_weights_keep_an_fp32_master_of_the_trainable_entries_only():
    torch.manual_seed(2)
    exact = torch.randn(8, 8)
    parameter = torch.nn.Parameter(exact.to(torch.bfloat16))
    before = parameter.detach().clone()
    indices = torch.tensor([3, 9, 40])
    slots = make_slots([("w", parameter, indices)], "adamw", 1e-3, 0.0, fp32_values=lambda name: exact)
    assert slots[0].master.dtype == torch.float32 and slots[0].master.numel() == 3
    assert torch.equal(slots[0].master, exact.view(-1)[indices])  # from the fp32 values, not the rounded ones
    updater = ParameterUpdater(slots, "per_tensor", 1.0, in_backward=True)
    run_steps(updater, parameter, torch.randn(4, 8, 8))
    frozen = torch.ones(64, dtype=torch.bool)
    frozen[indices] = False
    assert torch.equal(parameter.detach().view(-1)[frozen], before.view(-1)[frozen])
    assert torch.equal(parameter.detach().view(-1)[indices], slots[0].master.to(torch.bfloat16))
    assert updater.overhead_bytes() == 3 * 4 + 3 * 4  # fp32 master and int32 indices


def test_dense_fp32_parameter_is_its_own_master():
    parameter = torch.nn.Parameter(torch.ones(3))
    (slot,) = make_slots([("w", parameter, None)], "adamw", 1e-2, 0.0, fp32_values=no_checkpoint)
    assert slot.master is parameter
    updater = ParameterUpdater([slot], "none", 1.0, in_backward=True)
    assert updater.overhead_bytes() == 0
    run_steps(updater, parameter, torch.randn(4, 3))
    assert updater.state_bytes() == 2 * 3 * 4 + 4  # two moments and the step counter


def test_clipping_per_tensor_and_global():
    def clipped(mode, in_backward):
        a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
        slots = make_slots([("a", a, None), ("b", b, None)], "rmsprop", 1.0, 0.0, fp32_values=no_checkpoint)
        updater = ParameterUpdater(slots, mode, 1.0, in_backward=in_backward)
        seen = {}
        for slot in slots:  # record the clipped gradient each optimizer receives
            slot.optimizer.register_step_pre_hook(lambda opt, *_, name=slot.name: seen.update({name: opt_grad(opt)}))
        (a @ torch.tensor([3.0, 4.0]) + b @ torch.tensor([0.3, 0.4])).backward()
        return updater.step(), [seen["a"], seen["b"]]

    def opt_grad(optimizer):
        return optimizer.param_groups[0]["params"][0].grad.clone()

    norm, (first, second) = clipped("per_tensor", True)
    assert norm == pytest.approx((25 + 0.25) ** 0.5)
    assert first.norm() == pytest.approx(1.0, rel=1e-5) and torch.allclose(second, torch.tensor([0.3, 0.4]))
    assert clipped("per_tensor", False)[1][0].norm() == pytest.approx(1.0, rel=1e-5)
    _, grads = clipped("global", False)
    assert torch.stack([g.norm() for g in grads]).norm() == pytest.approx(1.0, rel=1e-5)
    assert clipped("none", True)[1][0].tolist() == [3.0, 4.0]
    with pytest.raises(UserError, match="global-norm clipping"):
        clipped("global", True)
