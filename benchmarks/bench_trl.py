"""RLOO step throughput: steerlib's kernel against TRL's RLOOTrainer, one steering vector, equal work.

Both train the same zero-initialised vector at the organism's last layer on the same prompts, with
the same prompts x completions per step, max new tokens, temperature, reward (Math-Verify) and model.
TRL gets the model object and the tokenizer, ``beta=0`` (no reference model), ``use_cpu=True``,
``bf16=False``, no gradient checkpointing, a constant learning rate, and an Adam optimizer over
exactly the vector (the vector is registered as the model's only trainable parameter; steerlib's
hooks add it in both cases). The script asserts the optimizer holds one tensor and that the vector
moved. Ratio = steerlib steps/s / TRL steps/s, medians over the steps after a warm-up step.

Run: ``.venv/bin/python benchmarks/bench_trl.py [--steps 11]``
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from torch import nn

from common import median, record, rloo_step_times
from steerlib.organism import load_organism
from steerlib.rewards import default_verifier
from steerlib.rloo import RLOOConfig, RLOOTrainer, VectorTrainable
from steerlib.steering import SteeringVector, steer
from steerlib.world import sample_problems

PROMPTS, K, MAX_NEW, LR = 32, 8, 64, 5e-2


def steerlib_steps(org, prompts, answers, steps: int) -> list[float]:
    vec = nn.Parameter(torch.zeros(org.model.config.hidden_size))
    sv = SteeringVector(vec, org.model.config.num_hidden_layers - 1)
    cfg = RLOOConfig(prompts_per_step=PROMPTS, completions_per_prompt=K, max_new_tokens=MAX_NEW, lr=LR)
    trainer = RLOOTrainer(VectorTrainable(org.model, [sv]), org.tokenizer, cfg)
    ids = org.tokenizer(prompts, add_special_tokens=False)["input_ids"]
    out = rloo_step_times(trainer, ids, answers, steps, PROMPTS)
    assert float(vec.detach().norm()) > 0, "steerlib: the vector did not move"
    return out


def trl_steps(org, prompts, answers, steps: int, *, per_step: int = PROMPTS, k: int = K, max_new: int = MAX_NEW,
              lr: float = LR, must_move: bool = True) -> list[float]:
    """Seconds of each of ``steps`` TRL RLOO steps (``per_step`` prompts of ``prompts`` each) training the last
    layer's vector through steerlib's hook; also used by bench_qwen_cpu.py. ``must_move``: fail if the vector
    stayed zero (off for runs too short for any reward to vary)."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import RLOOConfig as TRLConfig
    from trl import RLOOTrainer as TRLTrainer

    model = org.model
    vec = nn.Parameter(torch.zeros(model.config.hidden_size))
    model.register_parameter("steerlib_vector", vec)  # the model's only trainable parameter
    verifier = default_verifier()

    def reward(prompts, completions, answer, **_):
        return [verifier.score(c, a) for c, a in zip(completions, answer)]

    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t)

    opt = torch.optim.Adam([vec], lr=lr)
    with tempfile.TemporaryDirectory() as out:
        args = TRLConfig(
            output_dir=out,
            per_device_train_batch_size=per_step * k,
            num_generations=k,
            max_completion_length=max_new,
            temperature=1.0,
            top_p=1.0,
            beta=0.0,
            learning_rate=lr,
            lr_scheduler_type="constant",
            max_steps=steps,
            use_cpu=True,
            bf16=False,
            gradient_checkpointing=False,
            logging_steps=1,
            report_to=[],
            save_strategy="no",
            seed=0,
            dataloader_num_workers=0,
        )
        data = Dataset.from_dict({"prompt": prompts, "answer": answers})
        trainer = TRLTrainer(
            model=model,
            reward_funcs=reward,
            args=args,
            train_dataset=data,
            processing_class=org.tokenizer,
            optimizers=(opt, None),
            callbacks=[Clock()],
        )
        held = [p for g in trainer.optimizer.param_groups for p in g["params"]]
        assert len(held) == 1 and held[0] is vec, f"TRL optimizer holds {len(held)} tensors"
        with steer(model, SteeringVector(vec, model.config.num_hidden_layers - 1)):
            trainer.train()
    assert not must_move or float(vec.detach().norm()) > 0, "TRL: the vector did not move"
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=11)
    a = ap.parse_args()
    torch.set_num_threads(2)
    org = load_organism("main")
    probs = sample_problems(PROMPTS * a.steps, "train", 0)
    prompts, answers = [p.prompt for p in probs], [str(p.answer) for p in probs]
    ours = steerlib_steps(org, prompts, answers, a.steps)
    org = load_organism("main")  # a fresh copy for TRL
    theirs = trl_steps(org, prompts, answers, a.steps)
    m_ours, m_trl = median(ours[1:]), median(theirs[1:])
    res = {
        "rloo_steps_per_s_vs_trl": m_trl / m_ours,
        "rloo_step_seconds": {"steerlib": m_ours, "trl": m_trl},
        "rloo_setup": {
            "prompts": PROMPTS,
            "completions_per_prompt": K,
            "max_new_tokens": MAX_NEW,
            "steps_timed": a.steps - 1,
            "trl": __import__("trl").__version__,
        },
    }
    record(res)
    print(f"steerlib {m_ours:.2f} s/step, TRL {m_trl:.2f} s/step: steerlib is {m_trl / m_ours:.2f}x TRL's steps/s")


if __name__ == "__main__":
    main()
