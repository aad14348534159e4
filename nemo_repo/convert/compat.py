"""Make megatron-bridge 0.3.1 importable and correct on a CPU-only machine (gloo).

Two problems, both measured on megatron-bridge 0.3.1 / CPU torch; `import_bridge()` fixes both
in process and is idempotent. Nothing here changes behaviour on a machine with TransformerEngine.

| problem                                             | fix                                             |
|-----------------------------------------------------|-------------------------------------------------|
| megatron/bridge/peft/lora.py and lora_layers.py do  | a placeholder `transformer_engine` is present in |
| `import transformer_engine.pytorch` at module level | sys.modules only while those two modules import |
| (LoRA only; conversion never uses it)               | (a meta-path loader; their other imports load    |
|                                                     | first), so                                       |
|                                                     | megatron-core still sees HAVE_TE = False        |
| `MegatronParamMapping.scatter_to_tp_ranks` scatters | splits are made contiguous before the scatter   |
| non-contiguous torch.chunk views: on gloo the row-  | (fixed upstream after 0.3.1)                    |
| parallel shards (o_proj, down_proj) come out wrong  |                                                 |
"""

import importlib
import importlib.abc
import importlib.machinery
import sys
import types

from nemo_repo.model.versions import have_transformer_engine

_IMPORTED = False
_PEFT_MODULES = ("megatron.bridge.peft.lora_layers", "megatron.bridge.peft.lora")
# Everything the two LoRA modules import, loaded before the placeholder appears.
_PEFT_DEPENDENCIES = (
    "megatron.core.parallel_state", "megatron.core.utils", "megatron.core.transformer.moe.router",
    "megatron.core.transformer.moe.moe_utils", "megatron.bridge.peft.base",
    "megatron.bridge.peft.adapter_wrapper", "megatron.bridge.peft.module_matcher",
    "megatron.bridge.peft.utils", "megatron.bridge.utils.import_utils",
)


class _Placeholder(types.ModuleType):
    """A lower-case attribute is a sub-module (te.pytorch, te.ops), any other a new empty class
    (the LoRA modules subclass te.Linear at import time)."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if name[0].islower():
            value = _Placeholder(f"{self.__name__}.{name}")
        else:
            value = type(name, (), {})
        setattr(self, name, value)
        return value


class _PlaceholderFinder(importlib.abc.MetaPathFinder):
    """Serves the two LoRA modules through a loader that shows them the placeholder."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in _PEFT_MODULES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is not None:
            spec.loader = _PlaceholderLoader(spec.loader)
        return spec


class _PlaceholderLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        for name in _PEFT_DEPENDENCIES:
            importlib.import_module(name)
        root = _Placeholder("transformer_engine")
        added = {"transformer_engine": root, "transformer_engine.pytorch": root.pytorch}
        sys.modules.update(added)
        try:
            self.loader.exec_module(module)
        finally:
            for name in added:
                sys.modules.pop(name, None)


def _contiguous_scatter() -> None:
    from megatron.bridge.models.conversion.param_mapping import MegatronParamMapping

    original = MegatronParamMapping.scatter_to_tp_ranks
    if getattr(original, "__nemo_repo_contiguous__", False):
        return

    def scatter_to_tp_ranks(self, splits, *args, **kwargs):
        if splits:
            splits = [split.contiguous() for split in splits]
        return original(self, splits, *args, **kwargs)

    scatter_to_tp_ranks.__nemo_repo_contiguous__ = True
    MegatronParamMapping.scatter_to_tp_ranks = scatter_to_tp_ranks


def import_bridge():
    """Import megatron.bridge (with the two fixes above) and return its AutoBridge class."""
    global _IMPORTED
    if not _IMPORTED:
        if not have_transformer_engine():
            sys.meta_path.insert(0, _PlaceholderFinder())
        _contiguous_scatter()
        _IMPORTED = True
    from megatron.bridge import AutoBridge

    return AutoBridge
