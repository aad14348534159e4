"""Layer 4: the aligner model on megatron-core (see each module's docstring).

compat      megatron-core's CPU patches: named, for megatron's calls only, removable (CPU runs only)
versions    is the installed megatron stack one our pins work with (python -m nemo_repo.model.versions)
parallel    ParallelConfig, validate_layout (LayoutError), initialize_parallel (selects run.device)
presets     ModelConfig, PRESETS, to_transformer_config, layer_spec (local | transformer_engine)
policy      build_policy (GPTModel + mcore DDP), build_reference (frozen, forward-only)
logprobs    per-sequence completion log-prob sums from vocab-parallel logits
aligner     PreferenceAligner (forward_step / loss_func, train_step, evaluate), build_aligner
"""

from nemo_repo.model.compat import apply_cpu_compat
from nemo_repo.model.parallel import (LayoutError, ParallelConfig, destroy_parallel,
                                      initialize_parallel, validate_layout)
from nemo_repo.model.presets import PRESETS, ModelConfig, get_preset, to_transformer_config

__all__ = ["apply_cpu_compat", "LayoutError", "ParallelConfig", "destroy_parallel",
           "initialize_parallel", "validate_layout", "PRESETS", "ModelConfig", "get_preset",
           "to_transformer_config"]
