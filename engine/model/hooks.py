"""The one hooking surface: forward hooks and pre-hooks on modules named by path, removed on exit, always."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Mapping

import torch

from engine.errors import UserError

Hook = Callable[[torch.nn.Module, tuple, object], object]


def get_module(model: torch.nn.Module, path: str) -> torch.nn.Module:
    """Return ``model``'s submodule at dotted ``path``; UserError naming the path if absent."""
    try:
        return model.get_submodule(path)
    except AttributeError as exc:
        raise UserError(
            f"module '{path}' not found in {type(model).__name__}; the catalog does not match this "
            "model: rebuild it with build_catalog(model)"
        ) from exc


@contextmanager
def hooked(model: torch.nn.Module, hooks: Mapping[str, Hook] | None = None,
           pre_hooks: Mapping[str, Callable] | None = None,
           kw_pre_hooks: Mapping[str, Callable] | None = None) -> Iterator[None]:
    """Register hooks on ``model``'s modules, named by path, for the duration of the block.

    ``hooks``: path -> forward hook, torch's ``hook(module, inputs, output)``; returning a value
    replaces the module's output. ``pre_hooks``: path -> forward pre-hook, ``pre_hook(module,
    inputs)``, run before the module; returning a tuple replaces the inputs. ``kw_pre_hooks``:
    path -> pre-hook that also sees the keyword arguments (torch's ``with_kwargs=True``):
    ``pre_hook(module, args, kwargs)``; returning ``(args, kwargs)`` replaces both. Every handle
    is removed on exit, including when the block raises or a path is missing halfway through
    registration.
    """
    handles = []
    try:
        for path, fn in (kw_pre_hooks or {}).items():
            handles.append(get_module(model, path).register_forward_pre_hook(fn, with_kwargs=True))
        for path, fn in (pre_hooks or {}).items():
            handles.append(get_module(model, path).register_forward_pre_hook(fn))
        for path, fn in (hooks or {}).items():
            handles.append(get_module(model, path).register_forward_hook(fn))
        yield
    finally:
        for handle in handles:
            handle.remove()
