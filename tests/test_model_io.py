"""Final models carry a checksum that load_model verifies."""
import json

import pytest
import torch

from fidan.errors import FidanError
from fidan.model.gpt import GPT, GPTConfig
from fidan.model.io import load_model, save_model


def _model(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=64, context=16, n_layer=1, n_head=2, n_kv_head=2, d_model=16))


@pytest.fixture
def saved(tmp_path):
    save_model(tmp_path / "m", _model(), {"stage": "pretrain", "tokenizer": "tokenizer/tokenizer.json"})
    return tmp_path / "m"


def test_a_saved_model_loads_and_records_its_checksum(saved):
    model, info = load_model(saved, "cpu")
    assert info["stage"] == "pretrain" and len(info["checksum"]["sha256"]) == 64
    assert info["checksum"]["bytes"] == (saved / "model.safetensors").stat().st_size
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.equal(model(ids), _model().eval()(ids))


def test_a_flipped_bit_in_the_weights_is_caught(saved):
    path = saved / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) - 100] ^= 0x10  # inside a tensor: safetensors alone would load it
    path.write_bytes(bytes(data))
    with pytest.raises(FidanError, match=r"model\.safetensors: damaged weights file \(checksum mismatch.*"
                                         r"retrain this stage, or restore"):
        load_model(saved, "cpu")


def test_truncated_or_foreign_weights_are_caught(saved, tmp_path):
    save_model(tmp_path / "other", _model(1))
    (saved / "model.safetensors").write_bytes((tmp_path / "other" / "model.safetensors").read_bytes())
    with pytest.raises(FidanError, match="checksum mismatch"):
        load_model(saved, "cpu")
    path = saved / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(FidanError, match="truncated"):
        load_model(saved, "cpu")


def test_an_edited_config_is_caught(saved):
    info = json.loads((saved / "model.json").read_text())
    info["model"]["rope_theta"] = info["model"]["rope_theta"] + 1  # loads, but would compute something else
    (saved / "model.json").write_text(json.dumps(info))
    with pytest.raises(FidanError, match="model config does not match its checksum"):
        load_model(saved, "cpu")


def test_a_folder_from_before_checksums_still_loads(saved):
    info = json.loads((saved / "model.json").read_text())
    del info["checksum"]
    (saved / "model.json").write_text(json.dumps(info))
    model, _ = load_model(saved, "cpu")
    assert model.cfg.d_model == 16


def test_a_stale_checksum_in_info_cannot_override_the_new_one(tmp_path):
    """Callers pass inherited provenance; the checksum written is always the new weights'."""
    save_model(tmp_path / "a", _model(0))
    _, old = load_model(tmp_path / "a", "cpu")
    save_model(tmp_path / "b", _model(1), {"checksum": old["checksum"]})
    load_model(tmp_path / "b", "cpu")
