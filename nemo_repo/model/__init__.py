"""Layer 4: the preference model on megatron-core (see each module's docstring).

compat      megatron-core's CPU patches: named, for megatron's calls only, removable (CPU runs only)
versions    is the installed megatron stack one our pins work with (python -m nemo_repo.model.versions),
            Transformer Engine detection, guards for the private megatron APIs we use
parallel    ParallelConfig, validate_layout (LayoutError), initialize_parallel (selects run.device)
presets     ModelConfig, PRESETS, to_transformer_config, layer_spec (local | transformer_engine)
attention   core attention on torch's scaled_dot_product_attention for the local spec
policy      build_policy (GPTModel + mcore DDP), build_reference (frozen, forward-only)
logprobs    per-sequence completion log-prob sums from vocab-parallel logits
preference  PreferenceModel (forward_step / loss_func / run of the policy under an objective),
            CompletionScorer (score: forward-only completion log-prob sums, e.g. the reference),
            PassState (what one pass takes and records); the step around them: training/step.py
weights     the model-weights format: load_model_weights / save_model_weights (any TP/PP)
imported    nemo_repo_model.json, the imported model's shape next to converted weights
"""

import warnings

# megatron-core announces every fallback it takes when Transformer Engine / apex are absent (CPU,
# plain pip installs): 7-16 lines at each start for choices this recipe makes on purpose.
for _notice in ("Transformer Engine and Apex are not installed", "Apex is not installed",
                "full scope is deprecated"):
    warnings.filterwarnings("ignore", message=_notice, category=UserWarning)
# dist_checkpointing's loader calls torch APIs that torch has deprecated (shown at every resume)
for _notice in ("`load_state_dict` is deprecated", "Please use DTensor instead"):
    warnings.filterwarnings("ignore", message=_notice, category=FutureWarning)

from nemo_repo.model.compat import apply_cpu_compat  # noqa: E402
from nemo_repo.model.parallel import (LayoutError, ParallelConfig, destroy_parallel,  # noqa: E402
                                      initialize_parallel, validate_layout)
from nemo_repo.model.presets import PRESETS, ModelConfig, get_preset, to_transformer_config  # noqa: E402

__all__ = ["apply_cpu_compat", "LayoutError", "ParallelConfig", "destroy_parallel",
           "initialize_parallel", "validate_layout", "PRESETS", "ModelConfig", "get_preset",
           "to_transformer_config"]
