"""The RLOO training kernel, as the authors' code implements it (see the book's notes on the authors' code).

One step: sample ``K`` completions for each of ``P`` prompts under the current policy (τ = 1.0,
top_p = 1.0, one shared prefill per prompt); reward 1/0 with Math-Verify; advantage
``A_i = r_i - mean_{j != i} r_j`` within each prompt's group (no std scaling); loss
``-sum_i A_i * sum_t log π(y_t)`` over completion tokens divided by the number of completion tokens in
the batch (``loss_norm="token"``, the authors' global token mean; ``"sequence"`` is the named
alternative: the mean over sequences of each sequence's token-mean), with log-probs from logits divided
by τ; fully on-policy (no ratio, no clipping); Adam on the trainable tensors only, gradient-norm clip
(paper: 2). Optional k3 KL to the reference (unsteered / adapter-disabled / initial) model, off by
default.

What is trained is a :class:`Trainable`: steering vectors (one layer, all layers, or a multiplexed
sweep where each prompt group is routed to one layer's vector), a PEFT LoRA, or all weights. In a
multiplexed step every routing group gets the same prompts; advantages, token normalisation and
gradient clipping never mix groups, so each vector's update equals a single-layer run's on the same
samples.

Example:
    >>> tr = VectorTrainable(model, zero_vectors(model, [5]))                     # doctest: +SKIP
    >>> history = train(tr, tok, prompts, answers, RLOOConfig(steps=100), run_dir="runs/l5")  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from steerlib.arch import model_parts
from steerlib.rewards import MathVerifier, default_verifier
from steerlib.budgets import hidden_byte_budget, kv_token_budget, logit_element_budget, micro_batch_token_budget
from steerlib.distributed import DataParallel
from steerlib.microbatch import length_batches
from steerlib.rollout import sample_rollouts_chunked
from steerlib.sampling import MIN_SHARED_PREFIX, Rollouts, cache_kwarg, prompt_seed
from steerlib.trainables import FullTrainable, LoraTrainable, Trainable, VectorTrainable

__all__ = [
    "RLOOConfig",
    "Engine",
    "CHECKPOINT_MINUTES",
    "Trainable",
    "VectorTrainable",
    "LoraTrainable",
    "FullTrainable",
    "rloo_advantages",
    "signal_share",
    "policy_loss",
    "RLOOTrainer",
    "manifest_params",
    "train",
]


@dataclass(frozen=True)
class RLOOConfig:
    """The recipe of one RLOO run: what is trained and how (defaults: the paper's where it applies). A run
    directory records it (:func:`manifest_params`); how it is computed is the :class:`Engine`'s."""

    prompts_per_step: int = 32
    completions_per_prompt: int = 8
    steps: int = 100
    lr: float = 5e-2
    betas: tuple[float, float] = (0.9, 0.999)
    max_grad_norm: float = 2.0
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    loss_norm: Literal["token", "sequence"] = "token"
    kl_coef: float = 0.0
    seed: int = 0
    sampling: Literal["batch", "per_prompt"] = "batch"  # one RNG per step, or one seed per prompt (data-parallel)
    cut_reward: float | None = None  # the reward of a completion cut at the budget (None: Math-Verify on its text)


#: A preset's training runs checkpoint at least this often (minutes), whatever their snapshot steps
#: (:func:`steerlib.recipes.engine_for`): a disconnect loses at most this much work.
CHECKPOINT_MINUTES = 10.0


@dataclass(frozen=True)
class Engine:
    """How a recipe is computed: memory budgets, where the loss pass starts, how rows are batched, which
    decode loop samples, how often the state is checkpointed. None of it changes what a run trains
    (only float rounding), so a run directory never records it and a run resumes under another engine.
    :func:`steerlib.recipes.engine_for` chooses it for a preset.

    Example:
        >>> Engine().loss_from_rollout, Engine(static_decode=True).rollout_loop(vectors=None, positions="all")
        (True, 'static')
    """

    micro_batch_tokens: int | None = None  # tokens per teacher-forced micro-batch (None: from memory, <= 32768)
    logit_elements: int | None = None  # full-vocabulary logits held at once (None: 2^27 on CPU; CUDA: free memory)
    kv_tokens: int | None = None  # KV-cache tokens per rollout chunk (None: from free memory on CUDA, 2^20 on CPU)
    checkpoint_every: int = 10  # optimizer steps between checkpoints ...
    checkpoint_minutes: float | None = None  # ... or fewer, when this many minutes passed since the last one
    loss_from_rollout: bool = True  # start the loss pass at the first steered block (rollout's hidden state)
    length_batches: bool = True  # micro-batches of rows of similar completion length (less padding)
    static_decode: bool = False  # fixed-shape rollouts, decode steps replayed from a CUDA graph on a GPU
    shared_prefix: bool = False  # the prompts' common leading tokens run once (rollouts and loss pass)
    rollouts: Any = None  # another rollout backend (steerlib.vllm_backend.VLLMRollouts); None: steerlib's loops

    def rollout_loop(self, vectors: Any, positions: Any) -> Literal["backend", "static", "dynamic"]:
        """Which loop samples a step: the backend when one is set, the fixed-shape loop when asked for
        and the steering (if any) acts at every position, else the dynamic loop (which itself takes the
        lean CPU path where :mod:`steerlib.fastdecode` allows)."""
        if self.rollouts is not None:
            return "backend"
        return "static" if self.static_decode and (vectors is None or positions == "all") else "dynamic"


def rloo_advantages(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """``A_i = r_i - mean_{j != i} r_j`` within consecutive groups of ``k`` (no std scaling).

    Example:
        >>> rloo_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), 4)
        tensor([ 1.0000, -0.3333, -0.3333, -0.3333])
    """
    if k < 2:
        raise ValueError("RLOO needs at least 2 completions per prompt")
    r = rewards.reshape(-1, k)
    baseline = (r.sum(-1, keepdim=True) - r) / (k - 1)
    return (r - baseline).reshape(-1)


def signal_share(pass_rates: Sequence[float]) -> float:
    """The share of prompt groups whose pass rate lies strictly between 0 and 1: the groups that give
    RLOO a non-zero advantage (:func:`rloo_advantages` is zero in a group that all passed or all failed,
    so such a group teaches nothing).

    Example:
        >>> signal_share([0.0, 0.25, 1.0, 0.5])
        0.5
    """
    return sum(0 < x < 1 for x in pass_rates) / len(pass_rates) if pass_rates else float("nan")


def _gather_logprobs(lm_head: Any, hidden: torch.Tensor, tokens: torch.Tensor, temperature: float) -> torch.Tensor:
    """log softmax(lm_head(hidden) / τ) at ``tokens`` (the full-vocabulary logits live only in here).
    ``hidden`` is made contiguous first: a bf16 matmul over a strided slice takes a slow path on CPUs
    (measured: 13.5x slower for 880 positions of Qwen2.5-Coder-0.5B's unembedding)."""
    logp = (lm_head(hidden.contiguous()).float() / temperature).log_softmax(-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


@contextlib.contextmanager
def _from_block(model: Any, block: int) -> Iterator[None]:
    """Within the context the decoder runs only blocks ``block ...`` (its ``inputs_embeds`` are then the
    hidden state entering ``block``). Hooks on the blocks stay where they are; each kept block's attention
    is numbered by its place in the shortened stack, so a KV cache holds them from its first layer."""
    decoder = model_parts(model).decoder
    layers = decoder.layers
    kept = list(layers)[block:]
    numbers = [getattr(b.self_attn, "layer_idx", None) for b in kept]
    decoder.layers = torch.nn.ModuleList(kept)
    for i, b in enumerate(kept):
        if numbers[i] is not None:
            b.self_attn.layer_idx = i
    try:
        yield
    finally:
        decoder.layers = layers
        for b, number in zip(kept, numbers):
            if number is not None:
                b.self_attn.layer_idx = number


def starts_anywhere(model: Any) -> bool:
    """Whether the loss pass may start at any block: every layer has the same attention type (the
    decoder picks a layer's mask by its position in ``layers``)."""
    return len(set(getattr(model_parts(model).causal_lm.config, "layer_types", None) or ["full"])) == 1


def _common_columns(ids: torch.Tensor, mask: torch.Tensor, limit: int) -> int:
    """Leading columns (at most ``limit``) that are real tokens and the same token in every row."""
    same = (ids[:, :limit] == ids[:1, :limit]).all(0) & mask[:, :limit].bool().all(0)
    return int(same.long().cumprod(0).sum())


def _token_logprobs(
    model: Any, ro: Rollouts, rows: torch.Tensor, temperature: float, logit_elements: int = 1 << 62,
    shared_prefix: bool = False,
) -> torch.Tensor:
    """Log-probs of the completion tokens of ``rows``, shape ``(len(rows), completion width)``.

    Only the columns up to the longest completion among ``rows`` are computed (the rest are padding,
    returned as 0), and the unembedding runs only at the positions that predict completion tokens. When
    ``rows x positions x vocab`` exceeds ``logit_elements`` the unembedding and log-softmax run chunk by
    chunk over positions, each chunk recomputed in the backward pass (activation checkpointing), so the
    full-vocabulary logits of the whole micro-batch never exist at once.

    When the rollouts kept the hidden state entering a block (:attr:`Rollouts.hidden`) the pass starts
    there: the blocks below it are not run again (their activations do not depend on what is trained).

    ``shared_prefix``: the columns every row shares (a system prompt, few-shot examples; at least
    :data:`~steerlib.sampling.MIN_SHARED_PREFIX`) run once, as one row whose KV cache is expanded to the
    others; the gradient flows through that cache to whatever the prefix's activations depend on (a
    vector steering inside it). Only where every row gets the same steering (no per-row routing).
    """
    comp_mask = ro.completion_mask[rows]
    n = max(1, int(comp_mask.sum(-1).max()))
    comp = ro.completion_ids[rows, :n]
    ids = torch.cat([ro.prompt_ids[rows], comp], 1)
    mask = torch.cat([ro.prompt_mask[rows], comp_mask[:, :n]], 1)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    block = int(ro.hidden_block[rows[0]]) if ro.hidden is not None and ro.hidden_block is not None else 0
    inputs: dict[str, torch.Tensor] = {"input_ids": ids}
    ctx: Any = contextlib.nullcontext()
    if block > 0:
        inputs = {"inputs_embeds": ro.hidden[rows, : ids.shape[1]].clone()}  # type: ignore[index]
        ctx = _from_block(model, block)
    parts = model_parts(model)
    vocab = parts.lm_head.weight.shape[0]
    step = max(1, logit_elements // max(1, len(rows) * vocab))
    # the last prompt column predicts the first completion token: it stays in the rows' own pass
    shared = _common_columns(ids, mask, ro.prompt_ids.shape[1] - 1) if shared_prefix and len(rows) > 1 else 0
    extra: dict[str, Any] = {}
    with ctx:
        if shared >= MIN_SHARED_PREFIX:
            from transformers import DynamicCache

            cache = DynamicCache()
            parts.decoder(**{k: v[:1, :shared] for k, v in inputs.items()}, position_ids=pos[:1, :shared],
                          use_cache=True, **{cache_kwarg(model): cache})
            cache.batch_repeat_interleave(len(rows))
            inputs = {k: v[:, shared:] for k, v in inputs.items()}
            extra = {"use_cache": True, cache_kwarg(model): cache}
            pos = pos[:, shared:]
        if step >= n + 1:  # everything fits: one pass, as the causal LM itself computes it
            logits = model(**inputs, attention_mask=mask, position_ids=pos, logits_to_keep=n + 1, **extra).logits
        else:
            hidden = parts.decoder(**inputs, attention_mask=mask, position_ids=pos, **extra).last_hidden_state
    if step >= n + 1:
        out = (logits[:, :-1].float() / temperature).log_softmax(-1).gather(-1, comp.unsqueeze(-1)).squeeze(-1)
    else:
        hidden = hidden[:, -(n + 1) : -1]
        chunks = []
        for lo in range(0, n, step):
            h, t = hidden[:, lo : lo + step], comp[:, lo : lo + step]
            if torch.is_grad_enabled() and h.requires_grad:
                chunks.append(torch.utils.checkpoint.checkpoint(
                    _gather_logprobs, parts.lm_head, h, t, temperature, use_reentrant=False))
            else:
                chunks.append(_gather_logprobs(parts.lm_head, h, t, temperature))
        out = torch.cat(chunks, 1)
    width = ro.completion_ids.shape[1]
    return torch.nn.functional.pad(out, (0, width - n)) if n < width else out


def policy_loss(logp: torch.Tensor, mask: torch.Tensor, adv: torch.Tensor, norm: str, denom: float) -> torch.Tensor:
    """The policy-gradient loss of a (micro-)batch; ``denom`` is the group's token or sequence count."""
    mask = mask.to(logp.dtype)
    if norm == "token":
        return -(adv * (logp * mask).sum(-1)).sum() / denom
    return -(adv * (logp * mask).sum(-1) / mask.sum(-1).clamp(min=1)).sum() / denom


class RLOOTrainer:
    """Runs RLOO steps for one :class:`Trainable` (see :func:`train` for the usual entry point)."""

    def __init__(
        self,
        trainable: Trainable,
        tokenizer: Any,
        cfg: RLOOConfig,
        verifier: MathVerifier | None = None,
        stop_ids: Sequence[int] | None = None,
        dp: DataParallel | None = None,
        engine: Engine | None = None,
    ) -> None:
        self.tr, self.tok, self.cfg = trainable, tokenizer, cfg
        self.engine = engine = engine or Engine()
        self.dp = dp or DataParallel()
        if self.dp.world > 1 and cfg.sampling != "per_prompt":
            raise ValueError("data-parallel training needs sampling='per_prompt' (completions independent of the rank)")
        self.stop_ids = list(stop_ids) if stop_ids else [tokenizer.eos_token_id]
        self.micro_tokens = engine.micro_batch_tokens or micro_batch_token_budget(trainable.model)
        self.logit_elements = engine.logit_elements or logit_element_budget(trainable.model)
        self.hidden_bytes = hidden_byte_budget(trainable.model)
        self.elt = next(trainable.model.parameters()).element_size()
        self.verifier = verifier or default_verifier()
        self.opts = [torch.optim.Adam(g, lr=cfg.lr, betas=cfg.betas) for g in trainable.optimizer_groups()]
        self.step_idx = 0

    # -- state --------------------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {f"param.{k}": v for k, v in self.tr.named_tensors().items()}
        out.update({f"master.{k}": v for k, v in self.tr.master_tensors().items()})
        for o, opt in enumerate(self.opts):
            for i, p in enumerate(opt.param_groups[0]["params"]):
                for key, val in opt.state.get(p, {}).items():
                    out[f"adam.{o}.{i}.{key}"] = val if torch.is_tensor(val) else torch.tensor(val)
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for k, p in self.tr.named_tensors().items():
                p.copy_(tensors[f"param.{k}"])
            for k, p in self.tr.master_tensors().items():
                p.copy_(tensors[f"master.{k}"])
        for o, opt in enumerate(self.opts):
            for i, p in enumerate(opt.param_groups[0]["params"]):
                keys = [k for k in tensors if k.startswith(f"adam.{o}.{i}.")]
                if keys:
                    opt.state[p] = {k.rsplit(".", 1)[1]: tensors[k].clone() for k in keys}

    # -- one step -----------------------------------------------------------------------------------
    def collect(self, prompt_ids: Sequence[Sequence[int]], answers: Sequence[str],
                indices: Sequence[int] | None = None) -> dict[str, Any]:
        """Rollouts and rewards for one step (every routing group gets the same prompts). ``indices``:
        the prompts' places in the step's draw, which seed them under ``sampling="per_prompt"``."""
        cfg, tr, eng = self.cfg, self.tr, self.engine
        route_ids = tr.route_ids()
        groups = route_ids if route_ids is not None else [None]
        k = cfg.completions_per_prompt
        all_prompts = [p for _ in groups for p in prompt_ids]
        routes = [g for g in groups for _ in prompt_ids] if route_ids is not None else None
        gen = torch.Generator(device=next(tr.model.parameters()).device)
        gen.manual_seed(cfg.seed * 1_000_003 + self.step_idx)
        t0 = time.perf_counter()
        vectors, positions = tr.steering()
        kw = dict(
            eos_id=self.stop_ids,
            pad_id=self.tok.pad_token_id,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            generator=gen,
            kv_tokens=eng.kv_tokens or kv_token_budget(tr.model),
            logit_elements=self.logit_elements,
        )
        blocks = [tr.start_block(r) for r in (routes if routes is not None else [None] * len(all_prompts))]
        width = max(len(p) for p in all_prompts) + cfg.max_new_tokens
        fits = len(all_prompts) * k * width * model_parts(tr.model).hidden_size * self.elt <= self.hidden_bytes
        if eng.loss_from_rollout and max(blocks) > 0 and starts_anywhere(tr.model) and fits:
            kw["capture"] = blocks
        if cfg.sampling == "per_prompt":
            places = list(indices) if indices is not None else list(range(len(prompt_ids)))
            kw["prompt_seeds"] = [prompt_seed(cfg.seed, self.step_idx, i) for _ in groups for i in places]
        loop = eng.rollout_loop(vectors, positions)
        if loop == "static":
            kw["static"] = True
        elif loop == "dynamic" and eng.shared_prefix:
            kw["shared_prefix"] = True
        if loop == "backend":
            ro = eng.rollouts.sample(tr, all_prompts, k, **kw)
        elif vectors is None:
            with tr.context(None):
                ro = sample_rollouts_chunked(tr.model, all_prompts, k, **kw)
        else:
            ro = sample_rollouts_chunked(tr.model, all_prompts, k, vectors=vectors, routes=routes,
                                         positions=positions, **kw)
        t1 = time.perf_counter()
        texts = self.tok.batch_decode(
            [ids[m.bool()].tolist() for ids, m in zip(ro.completion_ids, ro.completion_mask)],
            skip_special_tokens=True,
        )
        n_p = len(prompt_ids)
        rewards = torch.tensor(
            [self.verifier.score(t, str(answers[int(i) % n_p])) for t, i in zip(texts, ro.prompt_index)]
        )
        if cfg.cut_reward is not None:
            rewards[~ro.finished.cpu()] = cfg.cut_reward
        return {
            "rollouts": ro,
            "rewards": rewards,
            "groups": groups,
            "routes": routes,
            "n_prompts": n_p,
            "seconds_generation": t1 - t0,
            "seconds_reward": time.perf_counter() - t1,
        }

    def micro_batches(self, lengths: torch.Tensor, prompt_width: int) -> list[torch.Tensor]:
        """The loss pass's micro-batches for one group's rows (indices into ``lengths``, the completion
        lengths): within the token budget and few enough rows that one position's logits fit; sorted by
        length (:func:`steerlib.microbatch.length_batches`) or, with ``length_batches=False``, in row order."""
        row_cap = max(1, self.logit_elements // model_parts(self.tr.model).lm_head.weight.shape[0])
        if self.engine.length_batches:
            return length_batches(lengths, prompt_width=prompt_width, token_budget=self.micro_tokens, row_cap=row_cap)
        micro = max(1, min(self.micro_tokens // (prompt_width + max(1, int(lengths.max()))), row_cap))
        return [torch.arange(a, min(len(lengths), a + micro)) for a in range(0, len(lengths), micro)]

    def update(self, batch: dict[str, Any]) -> dict[str, Any]:
        """One optimizer step from collected rollouts (groups normalised and clipped separately)."""
        cfg, tr = self.cfg, self.tr
        ro, rewards, groups, routes = batch["rollouts"], batch["rewards"], batch["groups"], batch["routes"]
        k = cfg.completions_per_prompt
        t2 = time.perf_counter()
        adv = rloo_advantages(rewards, k)
        row_routes = torch.tensor(routes).repeat_interleave(k) if routes is not None else None
        width = ro.prompt_ids.shape[1]
        for opt in self.opts:
            opt.zero_grad(set_to_none=True)
        n_rows = ro.completion_ids.shape[0]
        rows_per_group = n_rows // len(groups)
        masks = [ro.completion_mask[g * rows_per_group : (g + 1) * rows_per_group] for g in range(len(groups))]
        # each group's denominator over every rank's rows: the ranks' losses then sum to the global loss
        denoms = self.dp.sum([float(m.sum()) if cfg.loss_norm == "token" else float(rows_per_group) for m in masks])
        for g in range(len(groups)):  # never mix groups: each has its own normalisation
            denom = denoms[g]
            for part in self.micro_batches(masks[g].sum(-1), width):
                rows = g * rows_per_group + part
                routing = row_routes[rows].tolist() if row_routes is not None else None
                shared = self.engine.shared_prefix and (routing is None or len(set(routing)) == 1)  # one steering
                with tr.context(routing, width):
                    logp = _token_logprobs(tr.model, ro, rows, cfg.temperature, self.logit_elements, shared)
                loss = policy_loss(
                    logp, ro.completion_mask[rows], adv[rows].to(logp.device), cfg.loss_norm, max(denom, 1.0)
                )
                if cfg.kl_coef:
                    with torch.no_grad(), tr.reference():
                        ref = _token_logprobs(tr.model, ro, rows, cfg.temperature, self.logit_elements, shared)
                    d = ref - logp
                    kl = ((d.exp() - d - 1) * ro.completion_mask[rows]).sum() / max(denom, 1.0)
                    loss = loss + cfg.kl_coef * kl
                loss.backward()
        grad_norms = []
        self.dp.sum_grads(p for opt in self.opts for p in opt.param_groups[0]["params"])
        tr.before_step()
        for opt in self.opts:
            params = opt.param_groups[0]["params"]
            grad_norms.append(float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)))
            opt.step()
        tr.after_step()
        self.step_idx += 1
        reward_sum, reward_count = self.dp.sum([float(rewards.sum()), len(rewards)])  # over every rank's rows
        first = Counter(self.tok.decode([int(x)]) for x in ro.completion_ids[:, 0])
        row = {
            "step": self.step_idx - 1,
            "reward_mean": reward_sum / reward_count,
            "reward_by_group": dict(zip([str(g) for g in groups], rewards.reshape(len(groups), -1).mean(-1).tolist())),
            "prompt_pass_rates": rewards.reshape(-1, k).mean(-1).tolist(),
            "first_tokens_top5": {t: c / n_rows for t, c in first.most_common(5)},
            "mean_completion_length": float(ro.lengths.float().mean()),
            "grad_norms": grad_norms,
            "seconds_generation": batch["seconds_generation"],
            "seconds_reward": batch["seconds_reward"],
            "seconds_loss_backward": time.perf_counter() - t2,
        }
        if isinstance(tr, VectorTrainable):
            row["vector_norms"] = {f"{v.layer}:{v.site}": float(v.vector.detach().norm()) for v in tr.vectors}
        return row

    def step(self, prompt_ids: Sequence[Sequence[int]], answers: Sequence[str],
             indices: Sequence[int] | None = None) -> dict[str, Any]:
        """:meth:`collect` then :meth:`update`."""
        return self.update(self.collect(prompt_ids, answers, indices))


def manifest_params(cfg: RLOOConfig) -> dict[str, Any]:
    """The recipe a run directory records (``rloo.<field>``; the :class:`Engine` never is). Batch
    sampling and scoring cut completions by their text, the defaults of runs made before the choices
    existed, are not recorded, so those directories still resume.

    Example:
        >>> "rloo.sampling" in manifest_params(RLOOConfig()), manifest_params(RLOOConfig())["rloo.lr"]
        (False, 0.05)
    """
    skip = {"sampling"} if cfg.sampling == "batch" else set()
    skip |= {"cut_reward"} if cfg.cut_reward is None else set()
    return {f"rloo.{k}": v for k, v in asdict(cfg).items() if k not in skip}


def train(
    trainable: Trainable,
    tokenizer: Any,
    prompts: Sequence[str],
    answers: Sequence[str],
    cfg: RLOOConfig,
    *,
    run_dir: Any = None,
    params: dict[str, Any] | None = None,
    resume: bool = True,
    progress: bool = True,
    stop_after: int | None = None,
    verifier: MathVerifier | None = None,
    on_step: Any = None,
    stop_ids: Sequence[int] | None = None,
    dp: DataParallel | None = None,
    engine: Engine | None = None,
) -> list[dict[str, Any]]:
    """Train for ``cfg.steps`` steps, checkpointing to ``run_dir`` and resuming from it.

    Each step draws ``cfg.prompts_per_step`` prompts from the pool with an RNG seeded by
    ``(cfg.seed, step)`` and samples with a generator seeded the same way, so an interrupted run
    resumed from its last checkpoint is bit-identical to an uninterrupted one (on the same machine).

    Args:
        prompts, answers: the training pool.
        run_dir: a path or :class:`steerlib.runs.RunDir` (``None``: keep nothing on disk).
        params: extra parameters recorded in the manifest (and compared on reopening).
        stop_after: stop after this many steps in this call (simulates an interruption).
        on_step: called with the number of completed steps after each step (e.g. to save snapshots).
        stop_ids: tokens that end a completion (default: the tokenizer's EOS); see
            :func:`steerlib.data.stop_token_ids`.
        dp: this process's place in a data-parallel group (:mod:`steerlib.distributed`): each rank
            samples its share of every step's prompts; only the main rank writes ``run_dir``, every
            rank resumes from it.
        engine: how the steps are computed (:class:`Engine`; default budgets from the device).

    Returns:
        The metric rows of every step of the run (also those of earlier, resumed sessions).
    """
    import random

    from steerlib.runs import RunDir

    dp = dp or DataParallel()
    if cfg.prompts_per_step < dp.world:
        raise ValueError(f"prompts_per_step ({cfg.prompts_per_step}) must be at least the number of processes "
                         f"({dp.world})")
    trainer = RLOOTrainer(trainable, tokenizer, cfg, verifier, stop_ids, dp, engine)
    run = None
    if run_dir is not None:
        if not dp.main and not isinstance(run_dir, RunDir):  # the main rank writes the manifest first
            dp.barrier()
        run = (
            run_dir
            if isinstance(run_dir, RunDir)
            else RunDir.open(run_dir, {**(params or {}), **manifest_params(cfg)})
        )
        if dp.main and not isinstance(run_dir, RunDir):
            dp.barrier()
        ckpt = run.load_checkpoint() if resume else None
        if ckpt is not None:
            trainer.load_state_tensors(ckpt[0])
            trainer.step_idx = int(ckpt[1]["step"])
        if dp.main:
            run.truncate_metrics(trainer.step_idx)
    encoded = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    rows: list[dict[str, Any]] = []
    bar = tqdm(
        range(trainer.step_idx, cfg.steps), desc="RLOO", disable=not (progress and dp.main), initial=trainer.step_idx,
        total=cfg.steps
    )
    done_here, last_saved = 0, time.monotonic()
    minutes = trainer.engine.checkpoint_minutes
    for step in bar:
        rng = random.Random(f"{cfg.seed}-{step}")
        idx = rng.sample(range(len(encoded)), cfg.prompts_per_step)
        places = dp.shard(range(len(idx)))
        row = trainer.step([encoded[idx[j]] for j in places], [answers[idx[j]] for j in places], places)
        rows.append(row)
        bar.set_postfix(reward=f"{row['reward_mean']:.3f}")
        if run is not None and dp.main:
            run.log_metrics(row)
            due = trainer.step_idx % trainer.engine.checkpoint_every == 0 or trainer.step_idx == cfg.steps
            if due or (minutes is not None and time.monotonic() - last_saved >= 60 * minutes):
                run.save_checkpoint(trainer.state_tensors(), {"step": trainer.step_idx})
                last_saved = time.monotonic()
        if on_step is not None and dp.main:
            on_step(trainer.step_idx)
        done_here += 1
        if stop_after is not None and done_here >= stop_after:
            break
    return run.metrics() if run is not None else rows
