"""Loading task data from the Hugging Face hub, used only when no local data folder is set."""

from __future__ import annotations

from typing import Any

from lota.errors import UserError


def load_hub_split(dataset_id: str, config: str | None, split: str) -> list[dict[str, Any]]:
    import datasets

    try:
        return list(datasets.load_dataset(dataset_id, config, split=split))
    except Exception as error:  # noqa: BLE001 - offline, auth and missing-split errors all end here
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(
            f"no local data folder is set (config data_dir or $LOTA_DATA_DIR) and the hub "
            f"dataset {dataset_id} could not be loaded: {first_line}"
        ) from None
