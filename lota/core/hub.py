"""Loading task data from the Hugging Face hub, used only when no local data folder is set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lota.core.errors import UserError


def hub_error(dataset_id: str, error: Exception) -> UserError:
    first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
    return UserError(
        f"no local data folder is set (config data_dir or $LOTA_DATA_DIR) and the hub "
        f"dataset {dataset_id} could not be loaded: {first_line}"
    )


def load_hub_split(dataset_id: str, config: str | None, split: str) -> list[dict[str, Any]]:
    import datasets

    try:
        return list(datasets.load_dataset(dataset_id, config, split=split))
    except Exception as error:  # noqa: BLE001 - offline, auth and missing-split errors all end here
        raise hub_error(dataset_id, error) from None


def load_hub_json(dataset_id: str, filename: str) -> Any:
    """A JSON file of a hub dataset repository that is no table the datasets library reads."""
    from huggingface_hub import hf_hub_download

    from lota.core.io import read_json

    try:
        path = hf_hub_download(dataset_id, filename, repo_type="dataset")
    except Exception as error:  # noqa: BLE001 - offline, auth and missing-file errors all end here
        raise hub_error(dataset_id, error) from None
    return read_json(Path(path), f"{dataset_id} {filename}")
