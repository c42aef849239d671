import pytest
import torch
from torch import nn

from oodlib.utils import batched, eval_mode, module_device


def _model() -> nn.Module:
    m = nn.Sequential(nn.Linear(3, 2), nn.Dropout())
    m.train()
    m[1].eval()  # a submodule whose mode differs from its parent's must come back as it was
    return m


def test_eval_mode_sets_and_restores_each_submodule():
    m = _model()
    with eval_mode(m, freeze=True):
        assert [s.training for s in m.modules()] == [False, False, False]
        assert not m[0].weight.requires_grad
    assert [s.training for s in m.modules()] == [True, True, False]
    assert m[0].weight.requires_grad


def test_eval_mode_restores_on_exception_and_leaves_grads_without_freeze():
    m = _model()
    with pytest.raises(RuntimeError), eval_mode(m):
        assert m[0].weight.requires_grad
        raise RuntimeError
    assert [s.training for s in m.modules()] == [True, True, False]


def test_eval_mode_none_is_a_no_op():
    with eval_mode(None):
        pass


@pytest.mark.parametrize("batch_size", [1, 2, 7])
def test_batched_equals_one_call(batch_size):
    x = torch.randn(5, 3)
    lin = nn.Linear(3, 4)
    with torch.no_grad():
        assert torch.equal(batched(lin, x, batch_size), lin(x))


def test_batched_refuses_empty_and_bad_batch_size():
    with pytest.raises(ValueError):
        batched(torch.neg, torch.empty(0, 3), 2)
    with pytest.raises(ValueError):
        batched(torch.neg, torch.ones(2, 3), 0)


def test_module_device():
    assert module_device(nn.Linear(2, 2)).type == "cpu"
    assert module_device(nn.ReLU()).type == "cpu"


def test_batched_and_eval_mode_refuse_what_is_not_a_tensor_or_a_module():
    with pytest.raises(TypeError, match="torch.Tensor"):
        batched(lambda t: t, [[1.0, 2.0]], 2)
    with pytest.raises(TypeError, match="nn.Module"):
        with eval_mode("model"):
            pass
