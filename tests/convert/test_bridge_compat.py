"""nemo_repo.convert.compat: megatron-bridge imports on CPU without making megatron-core believe
TransformerEngine is installed, and the TP scatter sends contiguous shards."""

import importlib
import sys

import pytest
import torch

from nemo_repo.convert.compat import import_bridge


def test_bridge_imports_without_transformer_engine():
    import_bridge()
    assert "transformer_engine" not in sys.modules
    with pytest.raises(ImportError):
        importlib.import_module("transformer_engine.pytorch")
    from megatron.core.models.gpt import gpt_layer_specs

    assert gpt_layer_specs.HAVE_TE is False
    assert import_bridge().__name__ == "AutoBridge"   # idempotent


def test_scatter_receives_contiguous_splits():
    """Row-parallel splits (torch.chunk along dim 1) are views; 0.3.1 scatters them as they are,
    which gloo gets wrong. At TP=1 the scatter returns the split itself, so it shows the fix."""
    import_bridge()
    from megatron.bridge.models.conversion.param_mapping import MegatronParamMapping

    class Probe(MegatronParamMapping):
        tp_size = 1

        def hf_to_megatron(self, hf_weights, megatron_module):
            raise NotImplementedError

        def megatron_to_hf(self, megatron_weights, megatron_module):
            raise NotImplementedError

    splits = torch.chunk(torch.arange(12.0).reshape(3, 4), 2, dim=1)
    assert not splits[0].is_contiguous()
    out = Probe.scatter_to_tp_ranks(Probe.__new__(Probe), list(splits), splits[0].shape,
                                    torch.float32, torch.device("cpu"))
    assert out.is_contiguous() and torch.equal(out, splits[0])
