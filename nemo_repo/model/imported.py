"""The imported-model metadata (`nemo_repo_model.json`) next to a converted checkpoint's weights.

`recipes.convert import` writes it (convert/bridge.py: write_converted); training reads the model
shape from it when `model.preset` is null (`model.init_from` names the checkpoint). Fields:
format_version, model_config (ModelConfig fields), hf_architecture, source (the HF folder), layout
({"tp", "pp"} used by the import).
"""

import json
from pathlib import Path

from nemo_repo.model.presets import ModelConfig

METADATA_FILE = "nemo_repo_model.json"
FORMAT_VERSION = 1


class ImportedModelError(ValueError):
    """A missing, unreadable or incompatible nemo_repo_model.json."""


def write_metadata(directory, model_config: ModelConfig, hf_architecture: str, source, layout: dict) -> None:
    metadata = {"format_version": FORMAT_VERSION, "model_config": model_config.to_dict(),
                "hf_architecture": hf_architecture, "source": str(Path(source).resolve()),
                "layout": layout}
    (Path(directory) / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")


def read_metadata(directory) -> dict:
    """The metadata of the converted checkpoint in `directory`, checked to be our format version."""
    path = Path(directory).expanduser() / METADATA_FILE
    try:
        metadata = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ImportedModelError(f"{path} cannot be read ({error})") from error
    version = metadata.get("format_version") if isinstance(metadata, dict) else None
    if version != FORMAT_VERSION:
        raise ImportedModelError(f"{path}: format_version {version!r}, expected {FORMAT_VERSION} "
                                 f"(import the HF model again with `python -m recipes.convert import`)")
    return metadata


def imported_model_config(directory) -> ModelConfig:
    """The model shape recorded with the converted checkpoint in `directory`."""
    if not directory:
        raise ImportedModelError("model.init_from is not set: point it at a checkpoint written by "
                                 "`python -m recipes.convert import` (its model shape is used)")
    metadata = read_metadata(directory)
    try:
        return ModelConfig(**metadata["model_config"])
    except (KeyError, TypeError, ValueError) as error:
        raise ImportedModelError(f"{Path(directory).expanduser() / METADATA_FILE}: invalid "
                                 f"model_config: {error!r}") from error
