"""HF <-> Megatron conversion (megatron-bridge) and logit verification; see recipes/convert.py."""

from nemo_repo.convert.bridge import (SUPPORTED_ARCHITECTURES, ConversionError, export_hf_weights,
                                      load_hf_weights, model_config_from_hf, read_hf_config,
                                      save_hf_folder)

__all__ = ["SUPPORTED_ARCHITECTURES", "ConversionError", "export_hf_weights", "load_hf_weights",
           "model_config_from_hf", "read_hf_config", "save_hf_folder"]
