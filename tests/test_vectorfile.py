"""vectorfile.py: the vector file format and PEFT export."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import save_file

from conftest import tiny_model
from steerlib.steering import SteeringVector, steer
from steerlib.vectorfile import VectorFileError, export_peft, load_vectors, save_vectors


def _vec(layer=1, site="resid_post", seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    return SteeringVector(torch.randn(16, generator=g, dtype=torch.float64), layer, site, **kw)


def test_round_trip_keeps_vectors_and_placement(tmp_path, model, batch):
    ids, mask = batch
    model.config.steerlib_model_id = "organism-test"
    vecs = [_vec(0), _vec(2, "v_in", 1, kv_group=1, scale=0.5)]
    path = save_vectors(tmp_path / "v.safetensors", vecs, model=model, training={"lr": 0.05})
    loaded = load_vectors(path, model)
    assert loaded.meta["op"] == "add" and loaded.meta["layer_index_base"] == 0
    assert loaded.meta["training"] == {"lr": 0.05} and loaded.meta["model_id"] == "organism-test"
    for a, b in zip(vecs, loaded.vectors):
        assert (a.layer, a.site, a.kv_group, a.scale) == (b.layer, b.site, b.kv_group, b.scale)
        assert torch.equal(a.vector, b.vector)
    with steer(model, vecs):
        want = model(ids, attention_mask=mask).logits
    with steer(model, loaded.vectors):
        got = model(ids, attention_mask=mask).logits
    assert torch.equal(want, got)
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left nothing behind


def test_load_rejects_mismatches(tmp_path, model):
    model.config.steerlib_model_id = "organism-a"
    path = save_vectors(tmp_path / "v.safetensors", [_vec(2)], model=model)
    with pytest.raises(VectorFileError, match="expected 'post_attn'"):
        load_vectors(path, model, site="post_attn")
    other = tiny_model("qwen2", seed=1)
    other.config.steerlib_model_id = "organism-b"
    with pytest.raises(VectorFileError, match="trained on 'organism-a'"):
        load_vectors(path, other)
    assert load_vectors(path, other, allow_other_model=True).vectors[0].layer == 2
    shallow = tiny_model("qwen2", layers=2)
    with pytest.raises(VectorFileError, match="layer 2 does not exist"):
        load_vectors(path, shallow)
    from transformers import Qwen2Config, Qwen2ForCausalLM

    wide = Qwen2ForCausalLM(
        Qwen2Config(
            vocab_size=48,
            hidden_size=32,
            intermediate_size=32,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    )
    with pytest.raises(VectorFileError, match="hidden size 16, the model has 32"):
        load_vectors(path, wide)


def test_foreign_safetensors_is_refused(tmp_path, model):
    """Another tool's control vector (no placement metadata) must not load and steer the wrong place."""
    path = tmp_path / "foreign.safetensors"
    save_file({"direction.1": torch.zeros(16)}, str(path))
    with pytest.raises(VectorFileError, match="no steerlib metadata"):
        load_vectors(path, model)


def test_peft_export_reproduces_the_hook_exactly(tmp_path, model, batch):
    from peft import PeftModel

    ids, mask = batch
    vec = _vec(1, scale=2.0)
    with steer(model, vec):
        want = model(ids, attention_mask=mask).logits
    out = export_peft(vec, model, tmp_path / "adapter")
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == 1 and cfg["lora_alpha"] == 1 and cfg["lora_bias"] is True
    peft_model = PeftModel.from_pretrained(copy.deepcopy(model), str(out)).eval()
    got = peft_model(input_ids=ids, attention_mask=mask).logits
    assert (got - want).abs().max().item() == 0.0
    assert (want - model(ids, attention_mask=mask).logits).abs().max() > 1e-3


def test_peft_export_only_for_resid_post(tmp_path, model):
    with pytest.raises(ValueError, match="only resid_post"):
        export_peft(_vec(1, "post_attn"), model, tmp_path / "a")


def test_a_gguf_model_is_named_by_hub_id_and_file_hash_and_old_cache_path_files_still_load(tmp_path, model):
    from steerlib.presets import gguf_model_id

    model.config.steerlib_model_id = "/some/machine/.cache/steerlib/pypi/1d9614638d18024d"  # an older file's id
    old = save_vectors(tmp_path / "old.safetensors", [_vec(1)], model=model)
    model.config.steerlib_model_id = gguf_model_id("Qwen/X", "1d9614638d18024d" + "0" * 48)
    assert load_vectors(old, model).vectors[0].layer == 1  # the same file's weights on another machine
    new = save_vectors(tmp_path / "new.safetensors", [_vec(1)], model=model)
    other = tiny_model("qwen2")
    other.config.steerlib_model_id = gguf_model_id("Qwen/X", "ffff" * 16)
    for path in (old, new):
        with pytest.raises(VectorFileError, match="trained on"):
            load_vectors(path, other)
