"""Layer 4: the aligner model on megatron-core (see each module's docstring).

compat      CPU-only torch patches for megatron-core (no-op on GPU)
parallel    ParallelConfig, validate_layout (LayoutError), initialize_parallel
presets     ModelConfig, PRESETS, to_transformer_config, layer_spec
policy      build_policy (GPTModel + mcore DDP), build_reference (frozen, forward-only)
logprobs    per-sequence completion log-prob sums from vocab-parallel logits
aligner     PreferenceAligner (forward_step / loss_func, train_step, evaluate)
"""

import warnings

# megatron-core announces every fallback it takes when Transformer Engine / apex are absent (CPU,
# plain pip installs): 7-16 lines at each start for choices this recipe makes on purpose.
for _notice in ("Transformer Engine and Apex are not installed", "Apex is not installed",
                "full scope is deprecated"):
    warnings.filterwarnings("ignore", message=_notice, category=UserWarning)

from nemo_repo.model.compat import apply_cpu_compat  # noqa: E402
from nemo_repo.model.parallel import (LayoutError,  # noqa: E402 ParallelConfig, destroy_parallel,
                                      initialize_parallel, validate_layout)
from nemo_repo.model.presets import PRESETS, ModelConfig, get_preset, to_transformer_config  # noqa: E402

__all__ = ["apply_cpu_compat", "LayoutError", "ParallelConfig", "destroy_parallel",
           "initialize_parallel", "validate_layout", "PRESETS", "ModelConfig", "get_preset",
           "to_transformer_config"]
