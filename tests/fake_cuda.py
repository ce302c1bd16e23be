"""CUDA without a GPU, for device-correctness tests: tensors that compute on the CPU but say
they live on cuda:0, and that refuse what a real CUDA device refuses.

`FakeCuda()` is a context manager. Inside it

- any torch call given `device="cuda"` (factories, `.to`, `.cuda()`) makes a `CudaTensor`: a
  wrapper whose `.device` is cuda:0 and whose data is an ordinary CPU tensor;
- an op on a `CudaTensor` runs on the CPU data, and its tensor results are `CudaTensor`s;
- an op mixing a `CudaTensor` with a CPU tensor of one or more dimensions raises
  `DeviceMismatch`, as PyTorch does on a GPU (a 0-dim CPU tensor may mix: PyTorch allows it);
  so does a CPU `torch.Generator` handed to an op on `CudaTensor`s;
- every copy to the host (`.cpu()`, `.to("cpu")`, `.tolist()`, `.item()`, `int()`, `float()`,
  `bool()`, `.numpy()`) is counted in `host_copies`; those that make the host wait for the
  device (all but `.to("cpu", non_blocking=True)`), and `torch.cuda.synchronize`, in
  `host_waits`: a test can check how often the host waits on the device;
- `torch.cuda` answers as for one GPU with bf16 (`is_available`, `device_count`,
  `synchronize`, `mem_get_info`, ...).

Values are the CPU's, bit for bit, so a run on fake CUDA gives the same outputs as on the CPU:
what it tests is only where tensors live and when they move.
"""

from __future__ import annotations

import contextlib
from unittest import mock

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_map

CUDA = torch.device("meta")  # see the module docstring
FREE_BYTES, TOTAL_BYTES = 40 * 2**30, 80 * 2**30
_HOST_METHODS = {"tolist", "item", "__int__", "__float__", "__bool__", "__index__", "numpy", "cpu"}


class DeviceMismatch(RuntimeError):
    pass


class CudaTensor(torch.Tensor):
    """A CPU tensor (`elem`) presented as living on cuda:0."""

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor):
        out = torch.Tensor._make_wrapper_subclass(cls, elem.shape, strides=elem.stride(),
                                                  storage_offset=elem.storage_offset(), dtype=elem.dtype,
                                                  device=CUDA, requires_grad=elem.requires_grad)
        out.elem = elem
        return out

    def __repr__(self):
        return f"CudaTensor({self.elem!r})"

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        _check_devices(func, args, kwargs)
        if func is torch.ops.aten._to_copy.default and _device_of(kwargs.get("device")) == "cpu":
            _count_host_copy()
            return func(*tree_map(_unwrap, args), **tree_map(_unwrap, kwargs))
        out = func(*tree_map(_unwrap, args), **tree_map(_unwrap, kwargs))
        written = [a.name for a in func._schema.arguments if a.alias_info is not None and a.alias_info.is_write]
        if written:  # in place (or out=): the CPU data changed under the wrapper; hand back the wrapper
            first = func._schema.arguments[0].name
            return args[0] if written[0] == first else kwargs[written[0]]
        return tree_map(lambda t: CudaTensor(t) if isinstance(t, torch.Tensor) else t, out)


def _unwrap(x):
    if isinstance(x, CudaTensor):
        return x.elem
    if isinstance(x, torch.device) and x.type in ("cuda", "meta"):
        return torch.device("cpu")
    return x


def _device_of(device) -> str | None:
    return None if device is None else torch.device(device).type


def _check_devices(func, args, kwargs) -> None:
    """PyTorch's rule on a GPU: the tensors of an op share a device, except 0-dim CPU tensors;
    a generator lives on the device of the tensors it draws for."""
    fake, host = [], []
    if func in _INDEXING:  # index tensors may stay on the host: PyTorch moves them
        args = (args[0], *args[2:])
    for x in torch.utils._pytree.tree_leaves((args, kwargs)):
        if isinstance(x, CudaTensor):
            fake.append(x)
        elif isinstance(x, torch.Tensor) and x.dim() > 0:
            host.append(x)
    if fake and host:
        raise DeviceMismatch(f"{func}: tensors on cuda:0 and cpu (shapes {list(fake[0].shape)} and "
                             f"{list(host[0].shape)})")
    generator = kwargs.get("generator")
    if fake and generator is not None and generator.device.type not in ("cuda", "meta"):
        raise DeviceMismatch(f"{func}: a {generator.device} generator for tensors on cuda:0")


_INDEXING = {torch.ops.aten.index.Tensor, torch.ops.aten.index_put.default, torch.ops.aten.index_put_.default,
             torch.ops.aten._index_put_impl_.default}
_counter = {"host_copies": 0, "host_waits": 0}


def _count_host_copy(waits: bool = True) -> None:
    _counter["host_copies"] += 1
    _counter["host_waits"] += waits


def _synchronize(device=None) -> None:
    _counter["host_waits"] += 1


class _CudaFactories(TorchFunctionMode):
    """Calls that name a CUDA device make CudaTensors; host copies are counted."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", "")
        if name in _HOST_METHODS and args and isinstance(args[0], CudaTensor):
            _count_host_copy()
            with torch._C.DisableTorchFunctionSubclass():
                return getattr(args[0].elem, name)(*args[1:], **kwargs)
        if name in ("__getitem__", "__setitem__") and isinstance(args[0], CudaTensor):
            # PyTorch would turn a Python index (a list, a scalar value) into a tensor on
            # self's device, which here holds no data: index the CPU data instead
            with torch._C.DisableTorchFunctionSubclass():
                if name == "__getitem__":
                    return CudaTensor(args[0].elem[tree_map(_unwrap, args[1])])
                args[0].elem[tree_map(_unwrap, args[1])] = _unwrap(args[2])
            return None
        if name in ("to", "cuda") and args and isinstance(args[0], torch.Tensor):
            return _to(name, args[0], list(args[1:]), kwargs)
        to_cuda = _device_of(kwargs.get("device")) in ("cuda", "meta")
        if to_cuda:
            kwargs["device"] = "cpu"
        out = func(*args, **kwargs)
        if to_cuda:
            return tree_map(lambda t: t if isinstance(t, CudaTensor) or not isinstance(t, torch.Tensor)
                            else CudaTensor(t), out)
        return out


def _to(name: str, src: torch.Tensor, args: list, kwargs: dict):
    """Tensor.to / Tensor.cuda: onto the fake device (a CudaTensor), to the host (counted), or
    a dtype change where the tensor is."""
    at = next((i for i, a in enumerate(args) if isinstance(a, (str, torch.device))), None)
    target = "cuda" if name == "cuda" else _device_of(args[at]) if at is not None else _device_of(kwargs.get("device"))
    base = src.elem if isinstance(src, CudaTensor) else src
    if name == "cuda":
        args, kwargs = [], {k: v for k, v in kwargs.items() if k == "non_blocking"}
    elif at is not None:
        args[at] = "cpu"
    elif "device" in kwargs:
        kwargs["device"] = "cpu"
    with torch._C.DisableTorchFunctionSubclass():
        out = base.to(*args, **kwargs)
    if target in ("cuda", "meta") or (target is None and isinstance(src, CudaTensor)):
        return src if out is base and isinstance(src, CudaTensor) else CudaTensor(out)
    if isinstance(src, CudaTensor):
        _count_host_copy(waits=not kwargs.get("non_blocking", False))
    return out


class FakeCuda(contextlib.ExitStack):
    """Inside: one fake bf16 GPU (see the module docstring); `host_copies` counts transfers
    to the host, `host_waits` the times the host waited for the device."""

    def __enter__(self):
        super().__enter__()
        _counter.update(host_copies=0, host_waits=0)
        for name, value in {"is_available": lambda: True, "device_count": lambda: 1,
                            "synchronize": _synchronize, "is_bf16_supported": lambda *a, **k: True,
                            "mem_get_info": lambda device=None: (FREE_BYTES, TOTAL_BYTES),
                            "current_device": lambda: 0,
                            "get_device_capability": lambda device=None: (9, 0)}.items():
            self.enter_context(mock.patch.object(torch.cuda, name, value))
        self.enter_context(_CudaFactories())
        return self

    @property
    def host_copies(self) -> int:
        return _counter["host_copies"]

    @property
    def host_waits(self) -> int:
        return _counter["host_waits"]
