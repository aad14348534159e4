"""nemo_repo.device: run.device resolution, and collectives that put tensors on the device the
group's backend needs (NCCL: CUDA, gloo: CPU), exercised on CPU with a group that reports NCCL."""

import os
import re
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import nemo_repo
from nemo_repo import device
from nemo_repo.reliability import AnnotatorIndex, ReliabilityConfig, ReliabilityState


@pytest.fixture(autouse=True)
def fresh_policy(monkeypatch):
    monkeypatch.setattr(device, "_selected", None)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def _gpus(monkeypatch, count):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_resolve(monkeypatch):
    _gpus(monkeypatch, 0)
    assert device.resolve("auto") == torch.device("cpu")
    assert device.resolve("cpu") == torch.device("cpu")
    with pytest.raises(device.DeviceError, match="run.device=cuda but torch .* sees no GPU"):
        device.resolve("cuda")
    with pytest.raises(device.DeviceError, match="must be one of auto, cpu, cuda, got 'gpu'"):
        device.resolve("gpu")
    _gpus(monkeypatch, 2)
    assert device.resolve("auto", local_rank=3) == torch.device("cuda", 1)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert device.resolve("cuda") == torch.device("cuda", 1)
    assert device.resolve("cpu") == torch.device("cpu")          # cpu wins even with GPUs


def test_select_is_fixed_once_and_cpu_hides_the_gpus(monkeypatch):
    _gpus(monkeypatch, 0)
    assert device.current_device() == torch.device("cpu")      # before select: auto
    assert device.select("cpu") == torch.device("cpu")
    assert device.select("auto") == torch.device("cpu")         # same answer: fine
    assert not device.is_cuda() and device.process_group_backend() == "gloo"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
    _gpus(monkeypatch, 1)
    with pytest.raises(device.DeviceError, match="already runs on cpu"):
        device.select("cuda")


@pytest.mark.parametrize("backend, expected", [
    ("nccl", torch.device("cuda", 0)), ("gloo", torch.device("cpu")), ("mpi", torch.device("cpu")),
    ("cpu:gloo,cuda:nccl", torch.device("cpu"))])   # mixed: the tensor's own device
def test_collective_device_follows_the_backend(monkeypatch, backend, expected):
    monkeypatch.setattr(dist, "get_backend", lambda group=None: backend)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert device.collective_device(torch.zeros(1), group=object()) == expected


class FakeWorld:
    """A group of two ranks whose backend reports `backend`: all_reduce doubles the tensor it is
    given (the other rank holds the same values) and records that tensor's device. Tensor.to is
    spied: a move to CUDA (impossible here) returns a CPU copy, so the copy back is exercised."""

    def __init__(self, monkeypatch, backend):
        self.moves, self.reduced = [], []
        original_to = torch.Tensor.to

        def to(tensor, *args, **kwargs):
            target = args[0] if args else kwargs.get("device")
            if isinstance(target, torch.device) and target.type == "cuda":
                self.moves.append(target)
                return original_to(tensor, "cpu", copy=True)
            return original_to(tensor, *args, **kwargs)

        def all_reduce(tensor, op=None, group=None):
            self.reduced.append(tensor)
            tensor.mul_(2)

        monkeypatch.setattr(torch.Tensor, "to", to)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(dist, "is_initialized", lambda: True)
        monkeypatch.setattr(dist, "get_backend", lambda group=None: backend)
        monkeypatch.setattr(dist, "all_reduce", all_reduce)


def test_all_reduce_on_nccl_moves_to_cuda_and_back(monkeypatch):
    world = FakeWorld(monkeypatch, "nccl")
    sums = torch.tensor([[3, 5], [1, 2]], dtype=torch.int64)
    out = device.all_reduce(sums)
    assert world.moves == [torch.device("cuda", 0)]              # sent to the GPU for NCCL
    assert world.reduced[0] is not sums                          # reduced on the moved copy
    assert out is sums and sums.tolist() == [[6, 10], [2, 4]]    # result back in the caller's tensor
    assert sums.dtype == torch.int64 and sums.device.type == "cpu"


def test_all_reduce_on_gloo_stays_on_cpu(monkeypatch):
    world = FakeWorld(monkeypatch, "gloo")
    flag = torch.tensor([1], dtype=torch.int32)
    assert device.all_reduce(flag, op=dist.ReduceOp.MAX).tolist() == [2]
    assert world.moves == [] and world.reduced[0] is flag


def test_reliability_step_reduces_its_int64_sums_on_cuda_under_nccl(monkeypatch):
    """The bug this module fixes: ReliabilityState all-reduced CPU int64 sums, which NCCL rejects."""
    world = FakeWorld(monkeypatch, "nccl")
    state = ReliabilityState(ReliabilityConfig(eta0=0.9, alpha=0.5), AnnotatorIndex(["a"]))
    state.accumulate(torch.tensor([0]), torch.tensor([0.25]))
    state.step(group=object())
    assert world.moves == [torch.device("cuda", 0)] and world.reduced[0].dtype == torch.int64
    assert state.labels_seen[1].tolist() == [2]                  # the other rank's label counted
    assert state.eta.item() == pytest.approx(0.5 * 0.9 + 0.5 * 0.25)


def test_world_of_one_is_a_no_op(monkeypatch):
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    values = torch.tensor([1.0, 2.0])
    assert device.all_reduce(values) is values and values.tolist() == [1.0, 2.0]
    assert device.broadcast(values, src=0) is values


def test_only_the_device_module_asks_torch_about_cuda():
    """One device policy: no other module decides the device on its own."""
    package = Path(nemo_repo.__file__).parent
    offenders = [str(path.relative_to(package)) for path in package.rglob("*.py")
                 if path.name not in ("device.py", "compat.py")
                 and re.search(r"torch\.cuda\.(is_available|current_device)\(", path.read_text())]
    assert offenders == []
