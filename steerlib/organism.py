"""The model organism: a tiny Qwen2 (and a Llama twin) pretrained on the arithmetic world, cached.

The recipe (chosen by prototype measurements: the smallest model that meets chapter 00's acceptance
bands): 6 layers, width 96, 4 query heads in 2 KV groups, MLP 384, untied head; AdamW (lr 3e-3, betas
0.9/0.98, weight decay 0.01), 50 warm-up steps then cosine to 0.1x over 1500 steps. (With weight decay
0.1 a first build met every figure but one: a last-layer vector of half the median residual norm reached
P(" Step") 0.93 but pass@1 only 0.825 against 0.959 forced, because the residual at the decision
position was 1.9x the median, so the vector was relatively twice as strong on the solution tokens.
Weight decay 0.01 at 1000 steps did no better (P 0.94, pass@1 0.805 against 0.971 forced); 1500 steps,
still under the 10-minute budget, met it (P 0.955, pass@1 0.854 against 0.928 forced). That is the
recipe kept.) Each step sees 32 worked rows, 32 more worked rows with the opener masked out of the loss
(practice on solutions without raising the opener's prior), 64 direct rows and 8 filler documents; the
loss is on completion tokens only. The opener's prior is therefore about 32 / (32 + 64) = 1/3: the base
model samples the worked mode about a third of the time, which is the room an RL-trained first-token
bias can use.

The Llama twin and the sibling train the same recipe for 800 steps on one thread (chapter 00 checks
they meet the same acceptance figures), so a book build pretrains them side by side
(:mod:`steerlib.buildgraph`); ``python -m steerlib.organism NAME ...`` pretrains named organisms.

Everything is deterministic from the seed (and the thread count, fixed during pretraining) and cached
under ``$STEERLIB_CACHE`` (default ``~/.cache/steerlib``) keyed by a hash of the configuration.

Example:
    >>> org = load_organism("main")                  # doctest: +SKIP
    >>> org.model.config.num_hidden_layers           # doctest: +SKIP
    6
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from steerlib.loaded import LoadedModel
from steerlib.world import build_tokenizer, filler_document, iter_train_problems

__all__ = [
    "OrganismConfig",
    "Organism",
    "ORGANISMS",
    "cache_root",
    "build_model",
    "pretrain",
    "load_organism",
    "weights_hash",
    "main",
]


@dataclass(frozen=True)
class OrganismConfig:
    """Everything that determines an organism's weights."""

    arch: Literal["qwen2", "llama"] = "qwen2"
    n_layers: int = 6
    hidden_size: int = 96
    n_heads: int = 4
    n_kv_heads: int = 2
    mlp_size: int = 384
    steps: int = 1500
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup: int = 50
    final_lr_fraction: float = 0.1
    worked_rows: int = 32
    worked_masked_rows: int = 32
    direct_rows: int = 64
    filler_rows: int = 8
    seed: int = 0
    threads: int = 2
    eval_every: int = 100
    parent: str | None = None  # continue training this organism's weights (a fine-tuned relative)

    def key(self) -> str:
        """A short hash of the configuration (the cache key; includes the parent's key)."""
        fields = dataclasses.asdict(self)
        if self.parent is not None:
            fields["parent_key"] = ORGANISMS[self.parent].key()
        else:
            fields.pop("parent")  # keys of organisms without a parent are unchanged
        blob = json.dumps(fields, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


ORGANISMS: dict[str, OrganismConfig] = {
    "main": OrganismConfig(),
    # The twin and the sibling only need chapter 00's acceptance figures (measured: 800 steps meet them,
    # forced " Step" 0.95 for both), and one thread each, so a build pretrains them side by side.
    "llama": OrganismConfig(arch="llama", steps=800, threads=1),
    "sibling": OrganismConfig(seed=1, steps=800, threads=1),
    # A fine-tuned relative of main (same weights basis, like base -> instruct): continued training on a
    # mix shifted towards direct answers, for the transfer chapter.
    "tuned": OrganismConfig(
        parent="main",
        steps=200,
        lr=1e-3,
        warmup=10,
        worked_rows=16,
        worked_masked_rows=16,
        direct_rows=96,
        seed=2,
        eval_every=50,
    ),
    # A seconds-scale organism for tests and smoke runs: same world and code path, no accuracy goal.
    "tiny": OrganismConfig(
        n_layers=2,
        hidden_size=32,
        mlp_size=64,
        steps=40,
        eval_every=20,
        worked_rows=8,
        worked_masked_rows=8,
        direct_rows=16,
        filler_rows=2,
    ),
    "tiny-tuned": OrganismConfig(
        n_layers=2,
        hidden_size=32,
        mlp_size=64,
        steps=5,
        eval_every=5,
        worked_rows=4,
        worked_masked_rows=4,
        direct_rows=24,
        filler_rows=2,
        parent="tiny",
        seed=2,
    ),
}


@dataclass
class Organism(LoadedModel):
    """A pretrained organism: the :class:`~steerlib.loaded.LoadedModel` record (``info``: its training
    record; ``path``: its cache folder) with the configuration that determines its weights."""

    config: OrganismConfig = field(default_factory=OrganismConfig)


def cache_root() -> Path:
    """``$STEERLIB_CACHE`` or ``~/.cache/steerlib``."""
    return Path(os.environ.get("STEERLIB_CACHE", Path.home() / ".cache" / "steerlib"))


def build_model(cfg: OrganismConfig, tokenizer: Any) -> Any:
    """A freshly initialised model for ``cfg`` (seeded)."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.mlp_size,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads,
        max_position_embeddings=128,
        tie_word_embeddings=False,
        rms_norm_eps=1e-6,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(cfg.seed)
    if cfg.arch == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common))
    return LlamaForCausalLM(LlamaConfig(**common))


def weights_hash(model: Any) -> str:
    """sha256 over every tensor of the state dict, in key order."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _rows(tokenizer: Any, prompts: list[str], completions: list[str], mask_first: bool) -> tuple:
    """Right-padded ids and labels (loss on completion + eos; optionally not on the first token)."""
    p_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    c_ids = tokenizer(completions, add_special_tokens=False)["input_ids"]
    seqs, labels = [], []
    for p, c in zip(p_ids, c_ids):
        c = c + [tokenizer.eos_token_id]
        seqs.append(p + c)
        lab = [-100] * len(p) + c
        if mask_first:
            lab[len(p)] = -100
        labels.append(lab)
    return seqs, labels


def _docs(tokenizer: Any, docs: list[str]) -> tuple:
    ids = [x + [tokenizer.eos_token_id] for x in tokenizer(docs, add_special_tokens=False)["input_ids"]]
    return ids, [list(x) for x in ids]


def _pad(seqs: list[list[int]], labels: list[list[int]], pad_id: int) -> tuple[torch.Tensor, ...]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id)
    lab = torch.full((len(seqs), width), -100)
    att = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (s, l_) in enumerate(zip(seqs, labels)):
        ids[i, : len(s)] = torch.tensor(s)
        lab[i, : len(l_)] = torch.tensor(l_)
        att[i, : len(s)] = 1
    return ids, lab, att


def _batch(cfg: OrganismConfig, tokenizer: Any, stream: Any, rng: random.Random) -> list[tuple]:
    """One pretraining step's data as padded groups: worked rows, then direct + filler rows."""
    take = lambda n: [next(stream) for _ in range(n)]  # noqa: E731
    w, wm, d = take(cfg.worked_rows), take(cfg.worked_masked_rows), take(cfg.direct_rows)
    s1, l1 = _rows(tokenizer, [p.prompt for p in w], [p.worked() for p in w], False)
    s2, l2 = _rows(tokenizer, [p.prompt for p in wm], [p.worked() for p in wm], True)
    s3, l3 = _rows(tokenizer, [p.prompt for p in d], [p.direct() for p in d], False)
    s4, l4 = _docs(tokenizer, [filler_document(rng) for _ in range(cfg.filler_rows)])
    pad = tokenizer.pad_token_id
    return [_pad(s1 + s2, l1 + l2, pad), _pad(s3 + s4, l3 + l4, pad)]


def _lr_factor(cfg: OrganismConfig, step: int) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.final_lr_fraction + (1 - cfg.final_lr_fraction) * 0.5 * (1 + math.cos(math.pi * t))


def pretrain(cfg: OrganismConfig, *, progress: bool = True) -> tuple[Any, Any, dict[str, Any]]:
    """Pretrain an organism from scratch.

    Returns:
        ``(model, tokenizer, info)``; ``info`` holds the loss curve, the greedy worked-mode accuracy
        on validation problems every ``eval_every`` steps, wall seconds and the weights hash.
    """
    from steerlib.evaluate import forced_accuracy

    tokenizer = build_tokenizer()
    old_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        if cfg.parent is not None:
            model = load_organism(cfg.parent, progress=progress).model
            model.requires_grad_(True)
        else:
            model = build_model(cfg, tokenizer)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(cfg, s))
        stream, rng = iter_train_problems(cfg.seed), random.Random(cfg.seed)
        history: dict[str, list] = {"step": [], "loss": [], "eval_step": [], "greedy_worked_accuracy": []}
        start = time.perf_counter()
        bar = tqdm(range(cfg.steps), desc="pretrain organism", disable=not progress)
        for step in bar:
            groups = _batch(cfg, tokenizer, stream, rng)
            n_tok = sum(int((lab != -100).sum()) for _, lab, _ in groups)
            opt.zero_grad(set_to_none=True)
            total = 0.0
            for ids, lab, att in groups:
                logits = model(input_ids=ids, attention_mask=att).logits[:, :-1]
                loss = (
                    torch.nn.functional.cross_entropy(
                        logits.reshape(-1, logits.shape[-1]), lab[:, 1:].reshape(-1), reduction="sum"
                    )
                    / n_tok
                )
                loss.backward()
                total += float(loss.detach())
            opt.step()
            sched.step()
            if step % 10 == 0 or step == cfg.steps - 1:
                history["step"].append(step)
                history["loss"].append(total)
                bar.set_postfix(loss=f"{total:.3f}")
            if (step + 1) % cfg.eval_every == 0 or step == cfg.steps - 1:
                model.eval()
                acc = forced_accuracy(model, tokenizer, n=64, seed=cfg.seed)
                model.train()
                history["eval_step"].append(step + 1)
                history["greedy_worked_accuracy"].append(acc)
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(old_threads)
    model.eval()
    model.requires_grad_(False)
    info = {
        "config": dataclasses.asdict(cfg),
        "history": history,
        "pretrain_seconds": seconds,
        "weights_sha256": weights_hash(model),
        "n_params": sum(p.numel() for p in model.parameters()),
        "torch": torch.__version__,
    }
    return model, tokenizer, info


def load_organism(
    name: str = "main",
    *,
    config: OrganismConfig | None = None,
    cache_dir: str | Path | None = None,
    rebuild: bool = False,
    progress: bool = True,
) -> Organism:
    """Load an organism from the cache, pretraining (and caching) it first if needed.

    Args:
        name: one of :data:`ORGANISMS` (``main``, ``llama``, ``sibling``, ``tuned``, ``tiny``), or any label when
            ``config`` is given.
        config: an explicit configuration (overrides the named one).
        cache_dir: cache root (default :func:`cache_root`).
        rebuild: pretrain again even if cached.
        progress: show a progress bar while pretraining.
    """
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    if config is None:
        if name not in ORGANISMS:
            raise ValueError(f"unknown organism {name!r}; choose one of {', '.join(ORGANISMS)}")
        config = ORGANISMS[name]
    path = Path(cache_dir or cache_root()) / f"organism-{name}-{config.key()}"
    if rebuild and path.exists():
        shutil.rmtree(path)
    if not (path / "pretrain.json").exists():
        model, tokenizer, info = pretrain(config, progress=progress)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
        model.config.steerlib_model_id = f"steerlib/organism-{name}"
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "pretrain.json").write_text(json.dumps(info, indent=1))
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    info = json.loads((path / "pretrain.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.eval()
    model.requires_grad_(False)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
    tokenizer.padding_side = "left"
    return Organism(name, model, tokenizer, info, path, config=config)


def main(argv: list[str] | None = None) -> int:
    """``python -m steerlib.organism NAME ...``: pretrain (or find in the cache) the named organisms."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m steerlib.organism", description="pretrain and cache organisms")
    ap.add_argument("names", nargs="+", choices=list(ORGANISMS), metavar="NAME", help=", ".join(ORGANISMS))
    args = ap.parse_args(argv)
    for name in args.names:
        org = load_organism(name)
        print(f"{name}: {org.path} ({org.info['pretrain_seconds']:.0f} s to pretrain)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
