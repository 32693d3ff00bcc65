import json

import pytest
import torch

from lota.core.errors import UserError
from lota.core.io import TensorReader
from lota.deltas.masks import load_mask
from lota.extract_mask import ExtractMaskArgs
from lota.extract_mask import run as extract_mask
from lota.fisher import FisherArgs, run
from lota.tasks.records import prepare_split
from tests.conftest import write_records


@pytest.fixture(scope="module")
def records(tmp_path_factory, gsm8k_dir, smol_tokenizer):
    found = prepare_split("gsm8k", "train", gsm8k_dir, smol_tokenizer, size=6, seed=0)
    return write_records(tmp_path_factory.mktemp("records") / "train.jsonl", found)


def read_scores(path):
    with TensorReader([path]) as reader:
        return {name: reader.get(name) for name in reader.names()}, reader.metadata


def test_scores_are_squared_or_plain_mean_gradients_and_rank_a_mask(tmp_path, tiny_model, records):
    common = {"model": tiny_model, "data": records, "batch_size": 3, "max_length": 128}
    scores = {}
    for kind, batches in (("mean_squared", 1), ("mean", 1), ("mean_squared", 2), ("mean", 2)):
        out = tmp_path / f"{kind}-{batches}.safetensors"
        run(FisherArgs(out=out, kind=kind, batches=batches, **common))
        scores[kind, batches], metadata = read_scores(out)
        assert metadata["format"] == "lota-fisher" and metadata["kind"] == kind and metadata["batches"] == str(batches)
    names = scores["mean", 1].keys()
    assert len(names) == 14 and all(name.endswith("proj.weight") for name in names)  # 7 per layer, 2 layers
    for name in names:
        # One batch: the squared gradient is the gradient squared. Two: the mean of squares is at
        # least the square of the mean (Jensen), and the gradients differ between batches.
        assert torch.allclose(scores["mean_squared", 1][name], scores["mean", 1][name].square(), rtol=1e-5, atol=0)
        assert (scores["mean_squared", 2][name] >= scores["mean", 2][name].square() * (1 - 1e-5)).all()
    assert any(not torch.equal(scores["mean", 1][name], scores["mean", 2][name]) for name in names)

    mask_path = tmp_path / "mask.safetensors"
    fisher = tmp_path / "mean_squared-2.safetensors"
    extract_mask(ExtractMaskArgs(out=mask_path, sparsity=0.9, strategy="fisher", scores=fisher))
    mask = load_mask(mask_path)
    fisher_scores = scores["mean_squared", 2]
    trained = torch.cat([fisher_scores[name][mask[name]] for name in names])
    frozen = torch.cat([fisher_scores[name][~mask[name]] for name in names])
    assert trained.min() >= frozen.max()
    with TensorReader([mask_path]) as reader:
        assert json.loads(reader.metadata["strategy"]) == "fisher"


def test_fisher_strategy_needs_a_scores_file_of_its_kind(tmp_path, tiny_model):
    with pytest.raises(UserError, match="strategy fisher needs --scores"):
        extract_mask(ExtractMaskArgs(out=tmp_path / "m.safetensors", sparsity=0.5, strategy="fisher"))
    weights = tiny_model / "model.safetensors"
    with pytest.raises(UserError, match="is not a gradient scores file"):
        extract_mask(ExtractMaskArgs(out=tmp_path / "m.safetensors", sparsity=0.5, strategy="fisher", scores=weights))
    assert not (tmp_path / "m.safetensors").exists()
