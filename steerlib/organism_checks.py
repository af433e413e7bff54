"""The organism's acceptance figures: base and forced-opener pass@1, residual norms, leverage.

``measure_organism`` computes what chapter 00 reports and ``make organism`` writes to
``book/results/00_organism.json``:

- ``base_pass_at_1`` and ``worked_opener_share``: pass@1 at τ = 1 on held-out test problems and the
  share of samples whose first token is the worked opener " Step";
- ``forced_worked_pass_at_1`` / ``forced_direct_pass_at_1``: the same with " Step" / " The" forced as
  the first token (the mode gap comes from the task: both modes are always correct in the corpus);
- ``median_resid_norm`` (last layer, every position of teacher-forced prompt + worked solution) and
  ``decision_resid_norm`` (last layer, last prompt position): the final norm divides a last-layer
  vector by these, so they decide its leverage (in a prototype a residual 3.5x the median at the decision position
  made any vector that flips the opener corrupt the solution);
- leverage: a last-layer ``resid_post`` vector of norm r x the median norm whose direction maximises
  log P(" Step") at the first generated token (Adam on training prompts), then applied at *all*
  positions, for r in ``leverage_ratios`` (at most 0.5): ``leverage_curve`` holds P(" Step" first)
  and pass@1 for each r, and ``leverage_p_opener`` / ``leverage_pass_at_1`` / ``leverage_norm_ratio``
  report the smallest r whose P(" Step") reaches 0.9 (the largest r when none does).

Example:
    >>> figures = measure_organism(load_organism("main"))  # doctest: +SKIP
    >>> figures["forced_worked_pass_at_1"] >= 0.9          # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
from typing import Any

import torch

from steerlib.loaded import LoadedModel
from steerlib.arch import model_parts
from steerlib.evaluate import evaluate
from steerlib.atomic import write_json
from steerlib.steering import SteeringVector, steer
from steerlib.world import DIRECT_OPENER, WORKED_OPENER, sample_problems

__all__ = ["residual_norms", "opener_direction", "opener_probability", "measure_organism", "ACCEPTANCE_COLUMNS", "main"]

#: The figures chapter 00 tabulates per organism.
ACCEPTANCE_COLUMNS = ("n_params", "pretrain_seconds", "base_pass_at_1", "worked_opener_share",
                      "forced_worked_pass_at_1", "forced_direct_pass_at_1", "median_resid_norm",
                      "decision_resid_norm", "leverage_p_opener", "leverage_pass_at_1")


def _batch(tokenizer: Any, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    enc = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


@torch.inference_mode()
def residual_norms(model: Any, tokenizer: Any, problems: list) -> tuple[float, float]:
    """(median last-layer residual norm over all real positions, median at the last prompt position)."""
    parts = model_parts(model)
    captured: list[torch.Tensor] = []
    hook = parts.layers[-1].register_forward_hook(
        lambda m, a, o: captured.append(o if isinstance(o, torch.Tensor) else o[0])
    )
    try:
        ids, att = _batch(tokenizer, [p.prompt + p.worked() for p in problems])
        model(input_ids=ids, attention_mask=att)
        all_norms = captured[0].norm(dim=-1)[att.bool()]
        captured.clear()
        ids, att = _batch(tokenizer, [p.prompt for p in problems])
        model(input_ids=ids, attention_mask=att)
        decision = captured[0][:, -1].norm(dim=-1)
    finally:
        hook.remove()
    return float(all_norms.median()), float(decision.median())


def _opener_logprob(model: Any, ids: torch.Tensor, att: torch.Tensor, vec: SteeringVector, token: int):
    with steer(model, vec):
        logits = model(input_ids=ids, attention_mask=att).logits[:, -1]
    return logits.log_softmax(-1)[:, token]


def opener_direction(
    model: Any, tokenizer: Any, problems: list, norm: float, *, steps: int = 150, lr: float = 0.05, seed: int = 0
) -> torch.Tensor:
    """A last-layer vector of the given norm maximising mean log P(worked opener) at the first token."""
    parts = model_parts(model)
    token = tokenizer.convert_tokens_to_ids(WORKED_OPENER)
    ids, att = _batch(tokenizer, [p.prompt for p in problems])
    gen = torch.Generator().manual_seed(seed)
    u = torch.nn.Parameter(torch.randn(parts.hidden_size, generator=gen) * 1e-2)
    opt = torch.optim.Adam([u], lr=lr)
    for _ in range(steps):
        s = norm * u / u.norm()
        loss = -_opener_logprob(model, ids, att, SteeringVector(s, parts.n_layers - 1), token).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (norm * u / u.norm()).detach()


@torch.inference_mode()
def opener_probability(model: Any, tokenizer: Any, problems: list, vec: SteeringVector | None) -> float:
    """Mean probability of the worked opener as the first generated token (optionally steered)."""
    token = tokenizer.convert_tokens_to_ids(WORKED_OPENER)
    ids, att = _batch(tokenizer, [p.prompt for p in problems])
    if vec is None:
        logits = model(input_ids=ids, attention_mask=att).logits[:, -1]
        return float(logits.softmax(-1)[:, token].mean())
    return float(_opener_logprob(model, ids, att, vec, token).exp().mean())


def measure_organism(
    org: LoadedModel,
    *,
    n_problems: int = 1000,
    samples: int = 1,
    leverage_ratios: tuple[float, ...] = (0.2, 0.3, 0.35, 0.4, 0.45, 0.5),
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """All acceptance figures of one organism (see the module docstring)."""
    model, tok = org.model, org.tokenizer
    parts = model_parts(model)
    test = sample_problems(n_problems, "test", seed)
    prompts, answers = [p.prompt for p in test], [str(p.answer) for p in test]
    kw = dict(n=samples, max_new_tokens=64, seed=seed, progress=progress)
    base = evaluate(model, tok, prompts, answers, **kw)
    worked = evaluate(model, tok, prompts, answers, prefix=WORKED_OPENER, **kw)
    direct = evaluate(model, tok, prompts, answers, prefix=DIRECT_OPENER, **kw)
    median_norm, decision_norm = residual_norms(model, tok, sample_problems(256, "validation", seed))
    train_probs = sample_problems(256, "train", seed)
    curve = []
    for ratio in sorted(leverage_ratios):
        s = opener_direction(model, tok, train_probs, ratio * median_norm, seed=seed)
        vec = SteeringVector(s, parts.n_layers - 1)
        lev = evaluate(model, tok, prompts, answers, vectors=[vec], **kw)
        curve.append(
            {
                "ratio": ratio,
                "norm": ratio * median_norm,
                "p_opener": opener_probability(model, tok, test, vec),
                "pass_at_1": lev.pass_at_1,
                "opener_share": lev.first_token_share(WORKED_OPENER),
                "accuracy_when_worked": lev.conditional_accuracy(WORKED_OPENER),
            }
        )
    chosen = next((c for c in curve if c["p_opener"] >= 0.9), curve[-1])
    return {
        "organism": org.name,
        "arch": org.config.arch,
        "n_params": int(sum(p.numel() for p in model.parameters())),
        "n_layers": parts.n_layers,
        "hidden_size": parts.hidden_size,
        "pretrain_seconds": float(org.info["pretrain_seconds"]),
        "weights_sha256": org.info["weights_sha256"],
        "n_samples": len(base.completions),
        "base_pass_at_1": base.pass_at_1,
        "base_pass_at_1_stderr": base.stderr,
        "worked_opener_share": base.first_token_share(WORKED_OPENER),
        "base_p_opener": opener_probability(model, tok, test, None),
        "accuracy_when_worked": base.conditional_accuracy(WORKED_OPENER),
        "accuracy_when_direct": base.conditional_accuracy(DIRECT_OPENER),
        "forced_worked_pass_at_1": worked.pass_at_1,
        "forced_direct_pass_at_1": direct.pass_at_1,
        "median_resid_norm": median_norm,
        "decision_resid_norm": decision_norm,
        "leverage_norm_ratio": chosen["ratio"],
        "leverage_norm": chosen["norm"],
        "leverage_p_opener": chosen["p_opener"],
        "leverage_pass_at_1": chosen["pass_at_1"],
        "leverage_opener_share": chosen["opener_share"],
        "leverage_accuracy_when_worked": chosen["accuracy_when_worked"],
        "leverage_curve": curve,
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m steerlib.organism_checks``: build the organisms and write their figures."""
    import argparse

    from steerlib.chapters import ORGANISM, chapter
    from steerlib.organism import load_organism

    out = chapter(ORGANISM).results
    ap = argparse.ArgumentParser(description=f"build the organisms and write {out.relative_to(out.parents[2])}")
    ap.add_argument("--out", default=str(out))
    ap.add_argument("--organisms", nargs="+", default=["main", "llama", "sibling"])
    ap.add_argument("--n-problems", type=int, default=1000)
    ap.add_argument("--rebuild", action="store_true", help="pretrain again even if cached")
    args = ap.parse_args(argv)
    results: dict[str, Any] = {}
    for name in args.organisms:
        org = load_organism(name, rebuild=args.rebuild)
        figures = measure_organism(org, n_problems=args.n_problems, progress=True)
        print(json.dumps(figures, indent=1))
        if name == "main":
            results.update(figures)
        else:
            results[name] = figures
    write_json(args.out, results)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
