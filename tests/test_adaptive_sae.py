"""diffsae.py on synthetic data with known sparse features; adaptive.py on a rank-1 LoRA."""

from __future__ import annotations

import numpy as np
import torch

from steerlib.adaptive import direction, segment_labels, segment_means, token_magnitudes
from steerlib.diffsae import collect_diffs, explained_share, feature_stats, train_sae
from steerlib.rloo import LoraTrainable
from steerlib.steering import SteeringVector
from steerlib.traces import encode_pairs


def test_topk_sae_recovers_known_sparse_features():
    g = torch.Generator().manual_seed(0)
    d, n_true, n = 32, 12, 6000
    true = torch.randn(n_true, d, generator=g)
    true = true / true.norm(dim=-1, keepdim=True)
    codes = torch.zeros(n, n_true)
    for i in range(n):  # two active features per sample, positive magnitudes
        idx = torch.randperm(n_true, generator=g)[:2]
        codes[i, idx] = 1 + torch.rand(2, generator=g) * 2
    data = codes @ true
    sae, hist = train_sae(data, n_features=24, k=2, steps=1500, lr=5e-3, progress=False)
    assert hist["fvu"][-1] < 0.01 and hist["fvu"][-1] < hist["fvu"][0]
    cos = true @ sae.w_dec.detach().T  # rows: true features; decoder rows are unit norm
    assert float(cos.max(1).values.min()) > 0.9, cos.max(1).values
    z = sae.encode(data[:100])
    assert int((z > 0).sum(-1).max()) <= 2
    assert torch.allclose(sae.w_dec.norm(dim=-1), torch.ones(24), atol=1e-5)


def test_feature_stats_and_explained_share(tiny_org):
    model, tok = tiny_org.model, tiny_org.tokenizer
    from steerlib.world import sample_problems

    probs = sample_problems(12, "test", 0)
    prompts, answers = [p.prompt for p in probs], [str(p.answer) for p in probs]
    v = SteeringVector(torch.randn(32, generator=torch.Generator().manual_seed(0)) * 5, 0)
    diffs = collect_diffs(model, tok, prompts, answers, v, 1, max_new_tokens=8)
    assert len(diffs.per_seq) == 12 and diffs.per_seq[0].shape[1] == 32
    assert sum(len(x) for x in diffs.per_seq) == int(diffs.forced.mask.sum())
    sae, _ = train_sae(diffs.stacked(), n_features=16, k=4, steps=300, progress=False)
    stats = feature_stats(sae, diffs)
    assert len(stats) == 16 and all(0 <= s["correct_rate"] <= 1 or np.isnan(s["correct_rate"]) for s in stats)
    full = explained_share(model, sae, diffs, v, 1, None)
    none = explained_share(model, sae, diffs, v, 1, [])
    assert full > 0.5 and abs(none) < 1e-6  # no features: the base run exactly


def test_rank1_lora_magnitudes_and_segments(tiny_org):
    model, tok = tiny_org.model, tiny_org.tokenizer
    tr = LoraTrainable(model, layers=[1], r=1, alpha=1)
    with torch.no_grad():
        for n, p in tr.model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    b = direction(tr, 1)
    assert b.shape == (32,)
    prompt = "Q: 123+456+789=?\nA:"
    forced = encode_pairs(tok, [prompt], [tok(" Step 1", add_special_tokens=False)["input_ids"]])
    mags = token_magnitudes(tr, forced, 1)
    labels = segment_labels(tok, prompt, "123+456+789", forced.seq_len[0] - forced.prompt_len[0])
    assert len(mags[0]) == len(labels) == forced.seq_len[0] and (mags[0] >= 0).all()
    assert labels[0] == "before problem" and "problem" in labels and labels[-1] == "generated"
    assert set(segment_means(mags, [labels])) == set(labels)
    # the magnitude is |scaling * A.m_t| * |B|: check one token by hand through the LoRA's own forward
    down = tr.model.base_model.model.model.layers[1].mlp.down_proj
    m = torch.randn(1, down.base_layer.in_features)
    delta = down(m) - down.base_layer(m)
    torch.testing.assert_close(
        delta[0].norm(), (m @ down.lora_A["default"].weight.T).abs()[0, 0] * b.norm(), rtol=1e-5, atol=1e-6
    )
