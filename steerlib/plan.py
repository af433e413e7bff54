"""A cost plan before any run: a chapter's projected wall time and peak memory for a preset on a device.

The projection counts the work a chapter does (RLOO steps: rollouts and the loss pass; snapshot
selection; test evaluation, AVG@n included) from the model's published shape, and turns FLOPs and bytes
into seconds with each device's peak and with efficiency factors that the benchmarks measure
(``benchmarks/results.json``: ``plan_efficiency``, and on the CPU the measured matmul peak and the
generation and loss-pass shares of it). It is a projection at the completion budget (every completion
as long as ``max_new_tokens``), so real runs, whose completions stop earlier, are usually faster.

Command line::

    python -m steerlib.plan 01_training --preset qwen2.5-math-1.5b --device a100-80gb
    python -m steerlib.plan --table            # GPU hours and memory per chapter x preset (the cost page's)
    python -m steerlib.plan 01_training --preset qwen2.5-math-7b --device h100 --gpus 8   # data-parallel

With ``gpus > 1`` (data-parallel training, :mod:`steerlib.launch`) each GPU samples and scores its share
of a step's prompts, so the training part is divided by the number of GPUs (the all-reduce of a
steering vector's gradient is a few kilobytes and is not counted); snapshot selection and evaluation
stay on one GPU, as the chapter runs them. A vLLM rollout engine (:mod:`steerlib.vllm_backend`) is not
in the plan: its speed has not been measured here.

Example:
    >>> p = plan("01_training", "organism", "cpu")
    >>> p.hours < 0.5
    True
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Mapping, Sequence
from typing import Any

from steerlib.arch import MODELS, ModelShape, shape_of
from steerlib.rloo import CHECKPOINT_MINUTES
from steerlib.chapters import CHAPTERS, PRESET_PARAMETERS, REAL_LM, TRAINING, default_parameters
from steerlib.chapters import chapter as chapter_spec

# ModelShape, MODELS and shape_of live in steerlib.arch (re-exported here for the plan's readers)
__all__ = ["ModelShape", "Device", "MODELS", "DEVICES", "Plan", "plan", "model_shape", "micro_batch_tokens", "shape_of",
           "table", "check_budget", "chapter_plan", "this_device", "resolve_preset_for", "main", "Work"]


@dataclass(frozen=True)
class Device:
    """Peak dense matmul throughput (bf16 on GPUs), memory and memory bandwidth."""

    name: str
    flops: float
    memory_gb: float
    bandwidth: float  # bytes/s
    gpu: bool = True


DEVICES: dict[str, Device] = {
    "a100-40gb": Device("NVIDIA A100 40GB", 312e12, 40, 1.555e12),
    "a100-80gb": Device("NVIDIA A100 80GB", 312e12, 80, 2.039e12),
    "h100": Device("NVIDIA H100 80GB (SXM)", 989e12, 80, 3.35e12),
    "l4": Device("NVIDIA L4", 121e12, 24, 0.3e12),
    "t4": Device("NVIDIA T4 (float16: no bfloat16)", 65e12, 16, 0.32e12),
    "cpu": Device("this machine's CPU (2 cores)", 225e9, 24, 20e9, gpu=False),
}

#: Efficiency factors used until ``benchmarks/results.json`` has measured ones (``plan_efficiency``).
DEFAULT_EFFICIENCY = {
    "gpu": {"loss_flops": 0.35, "decode_bandwidth": 0.5, "decode_step_s": 0.02, "call_s": 0.05, "startup_s": 120.0},
    "cpu": {"loss_flops": 0.40, "decode_flops": 0.25, "decode_step_s": 0.004, "call_s": 0.01, "startup_s": 8.0},
}
RESULTS = Path(__file__).resolve().parent.parent / "benchmarks" / "results.json"


def efficiency(kind: str) -> dict[str, float]:
    """Measured factors for ``gpu`` or ``cpu`` where the benchmarks recorded them, else the defaults."""
    out = dict(DEFAULT_EFFICIENCY[kind])
    if RESULTS.exists():
        data = json.loads(RESULTS.read_text())
        out.update(data.get("plan_efficiency", {}).get(kind, {}))
        if kind == "cpu" and "loss_pass_flops_share_of_peak" in data:
            out["loss_flops"] = data["loss_pass_flops_share_of_peak"]
            out["decode_flops"] = data["generation_flops_share_of_peak"]
        if kind == "cpu" and "bf16_vs_fp32_steerlib" in data.get("qwen_cpu", {}):  # bench_qwen_cpu.py
            out["bf16_speedup"] = data["qwen_cpu"]["bf16_vs_fp32_steerlib"]
    return out


def model_shape(preset: Any) -> ModelShape:
    """The shape of a preset's model: published for the hub models, from the local config or the
    organism's recipe otherwise."""
    if preset.model in MODELS:
        return MODELS[preset.model]
    if preset.train_source == "organism":
        from steerlib.organism import ORGANISMS

        c = ORGANISMS[preset.model]
        return ModelShape(c.n_layers, c.hidden_size, c.mlp_size, c.n_heads, c.n_kv_heads, 128)
    from types import SimpleNamespace

    from transformers import AutoConfig

    return shape_of(SimpleNamespace(config=AutoConfig.from_pretrained(preset.model)))


@dataclass
class Plan:
    """Projected seconds per part, peak memory, and whether it fits the device."""

    chapter: str
    preset: str
    device: str
    seconds: dict[str, float] = field(default_factory=dict)
    peak_gb: float = 0.0
    fits: bool = True
    fit_hint: str = ""  # when it does not fit: the smaller setting that would
    checkpoint_steps: int = 0  # a training run checkpoints every this many steps ...
    step_minutes: float = 0.0  # ... each of about this many minutes (one RLOO step of one run) ...
    checkpoint_minutes: float = CHECKPOINT_MINUTES  # ... and at least this often
    dtype: str = "float32"  # what the model computes in on the device (a preset's "auto" resolved)

    @property
    def hours(self) -> float:
        return sum(self.seconds.values()) / 3600

    def summary(self) -> str:
        parts = ", ".join(f"{k} {v / 3600:.2f} h" for k, v in self.seconds.items() if v > 0)
        fit = "" if self.fits else f" - DOES NOT FIT in the device's memory ({self.fit_hint})"
        every = min(self.checkpoint_steps * self.step_minutes, self.checkpoint_minutes)
        ckpt = (f"; checkpoints every {self.checkpoint_steps} steps or {self.checkpoint_minutes:g} min, whichever "
                f"comes first (about {every:.1f} min here)") if self.checkpoint_steps else ""
        return (f"plan for {self.chapter} on {self.preset} ({self.device}, {self.dtype}): {self.hours:.2f} h "
                f"[{parts}], peak memory {self.peak_gb:.1f} GB{fit}{ckpt}")


class _Cost:
    """Seconds for the elementary pieces of work on one device."""

    def __init__(self, shape: ModelShape, device: Device, prompt_len: int, completion_len: int,
                 dtype: str = "float32") -> None:
        self.m, self.d, self.p, self.c = shape, device, prompt_len, completion_len
        self.e = efficiency("gpu" if device.gpu else "cpu")
        half = device.gpu or dtype == "bfloat16"
        self.element = 2 if half else 4
        # a CPU computing in bf16: its measured speed-up over float32 (benchmarks: qwen_cpu), on every piece
        self.speed = 1.0 if device.gpu or not half else self.e.get("bf16_speedup", 2.0)
        self.kv_tokens = int(0.5 * device.memory_gb * 1e9 / shape.kv_bytes_per_token(self.element))

    def generate(self, rows: int, k: int = 1) -> float:
        """``rows`` completions, ``k`` per prompt (one shared prefill), in KV-budget chunks."""
        m, d, e = self.m, self.d, self.e
        flops_token = 2 * (m.block_params + m.vocab * m.hidden)
        prefill = flops_token * (rows / k) * self.p
        chunk = max(1, min(rows, self.kv_tokens // (self.p + self.c)))
        n_chunks = math.ceil(rows / chunk)
        seconds = 0.0
        for _ in range(n_chunks):
            if d.gpu:
                weights = m.params * self.element
                kv = chunk * (self.p + self.c / 2) * m.kv_bytes_per_token(self.element)
                step = max((weights + kv) / (d.bandwidth * e["decode_bandwidth"]),
                           flops_token * chunk / (d.flops * 0.5))
                seconds += self.c * (step + e["decode_step_s"])
            else:
                seconds += self.c * (flops_token * chunk / (d.flops * e["decode_flops"] * self.speed)
                                     + e["decode_step_s"])
        return seconds + prefill / (d.flops * self.e["loss_flops"] * self.speed) + n_chunks * e["call_s"]

    def loss(self, rows: int, layer_share: float = 1.0, weights: bool = False) -> float:
        """Teacher-forced forward and backward over ``rows`` sequences; the backward covers
        ``layer_share`` of the blocks (those above the lowest steered layer), twice as costly when
        weight gradients are needed."""
        m = self.m
        tokens = rows * (self.p + self.c)
        fwd = 2 * m.block_params * tokens + 2 * m.vocab * m.hidden * rows * self.c
        head = 2 * m.vocab * m.hidden * rows * self.c
        bwd = (2 if weights else 1) * (2 * m.block_params * tokens * layer_share) + head
        return (fwd + bwd) / (self.d.flops * self.e["loss_flops"] * self.speed) + self.e["call_s"]


def micro_batch_tokens(shape: ModelShape, device: Device, element: int = 2, *, share: float = 0.4,
                       cpu_tokens: int = 32768) -> int:
    """Tokens per teacher-forced micro-batch: ``share`` of the device memory left after the weights,
    divided by the activations a token keeps for the backward pass (at most ``cpu_tokens`` on a CPU)."""
    free = device.memory_gb * 1e9 - shape.params * element
    return max(256, min(cpu_tokens if not device.gpu else 1 << 20,
                        int(share * free) // shape.activation_bytes_per_token(element)))


def _test_samples(preset: Any) -> int:
    if preset.train_source == "organism":
        return preset.eval_problems or 1000
    sizes = {"aime24": 30, "aime25": 30, "amc23": 40, "math500": 500, "minerva": 272, "olympiad": 675}
    cap = preset.eval_problems
    return sum(min(sizes.get(b, 500), cap or 10**9) * n for b, n in preset.eval_benchmarks.items())


@dataclass(frozen=True)
class Work:
    """What a chapter's workload (:attr:`steerlib.chapters.ChapterSpec.workload`) counts with: the preset,
    the model's shape, the layers and seeds asked for, the sample counts, and the seconds of the two
    elementary pieces of work on the planned device."""

    P: Any
    shape: ModelShape
    cost: _Cost
    layers: list[int]
    n_seeds: int
    val_problems: int
    test: int  # test samples of one evaluated configuration
    n_snap: int  # snapshots per run
    rows: int  # rollout rows per RLOO step

    def run(self, n_groups: int = 1, share: float | None = None, weights: bool = False) -> float:
        """Seconds of one RLOO run: ``n_groups`` routing groups, the backward through ``share`` of the
        blocks (default one block), weight gradients when ``weights``."""
        share = 1 / self.P.n_layers if share is None else share
        k = self.P.completions_per_prompt
        return self.P.steps * (self.cost.generate(self.rows * n_groups, k)
                               + n_groups * self.cost.loss(self.rows, share, weights))

    def generate(self, rows: float) -> float:
        """Seconds to sample ``rows`` completions (one per prompt)."""
        return self.cost.generate(rows)


def _dtype_on(preset: Any, device: Device) -> str:
    """The dtype a preset computes in on ``device`` (``"auto"``: bf16 on a GPU; on ``cpu``, this machine's)."""
    from steerlib.presets import auto_dtype

    if preset.dtype != "auto":
        return preset.dtype
    return "bfloat16" if device.gpu else auto_dtype("cpu")


def plan(chapter: str, preset: Any, device: str = "a100-80gb", *, layers: list[int] | str | None = None,
         val_problems: int = 200, prompt_len: int | None = None, n_seeds: int = 1, gpus: int = 1,
         hint: bool = True) -> Plan:
    """Project a chapter's wall time and peak memory (see the module docstring).

    Args:
        chapter: a chapter's name (:data:`steerlib.chapters.CHAPTERS`).
        preset: a :class:`~steerlib.presets.Preset` or a preset name.
        device: a key of :data:`DEVICES`.
        layers: chapter 02's layer subset (default: every layer; ``"all"`` or ``"14,27"`` as in the chapter).
        n_seeds: training seeds of chapters 01 and 02 (each seed trains, selects and evaluates its own runs).
        gpus: GPUs sharing each training step (data-parallel); the training part is divided by them.
        hint: when it does not fit, find the smaller completion budget or batch that does (``fit_hint``).
    """
    from steerlib.presets import resolve_preset

    P = resolve_preset(preset) if isinstance(preset, str) else preset
    spec = chapter_spec(chapter)
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    dev = DEVICES[device]
    shape = model_shape(P)
    p_len = prompt_len or {"organism": 20, "addition": 95, "gsm_symbolic": 110}.get(P.train_source, 200)
    cost = _Cost(shape, dev, p_len, P.max_new_tokens, _dtype_on(P, dev))
    rows = P.prompts_per_step * P.completions_per_prompt
    test = _test_samples(P)
    layers = P.parse_layers(layers) if isinstance(layers, str) else (
        list(range(P.n_layers)) if layers is None else list(layers))
    out = Plan(chapter, P.name, device, dtype=_dtype_on(P, dev))
    work = Work(P, shape, cost, layers, n_seeds, val_problems, test, len(P.checkpoints), rows)
    out.seconds = spec.workload(work)
    if gpus < 1:
        raise ValueError(f"gpus must be >= 1 (got {gpus})")
    for part in ("training", "sweep", "baselines"):  # the parts made of RLOO steps
        if part in out.seconds:
            out.seconds[part] /= gpus
    if gpus > 1:
        out.device = f"{gpus} x {device}"
    out.seconds["startup"] = cost.e.get("startup_s", 0.0)  # kernel, imports, model load
    weights_gb = shape.params * cost.element / 1e9
    kv_gb = min(cost.kv_tokens, rows * (p_len + P.max_new_tokens)) * shape.kv_bytes_per_token(cost.element) / 1e9
    mb_tokens = min(micro_batch_tokens(shape, dev, cost.element), rows * (p_len + P.max_new_tokens))
    act_gb = mb_tokens * shape.activation_bytes_per_token(cost.element) / 1e9 + (1 << 26) * 4 * 3 / 1e9
    extra = 3 * shape.params * 4 / 1e9 if spec.trains_weights else 0.0  # fp32 master + Adam
    out.peak_gb = weights_gb + max(kv_gb, act_gb) + extra
    out.fits = out.peak_gb <= dev.memory_gb
    out.checkpoint_steps = min(P.checkpoints)
    out.step_minutes = work.run() / P.steps / gpus / 60
    if not out.fits and hint:
        out.fit_hint = _what_fits(out, P, layers, val_problems, n_seeds)
    return out


#: The presets the cost page projects onto GPUs: the paper's models and the real model of chapter 09.
PAPER_PRESETS = ("qwen2.5-math-1.5b", "qwen2.5-math-7b", "llama3.1-8b-instruct", "qwen2.5-coder-0.5b",
                 "qwen2.5-coder-1.5b")


def table(presets: Sequence[str] = PAPER_PRESETS, devices: Sequence[str] = ("a100-40gb", "a100-80gb"),
          n_seeds: int = 3) -> str:
    """A markdown table of every chapter x preset on each of ``devices``: planned hours and peak memory
    (GB), with the chapters' default ``n_seeds`` training seeds; "does not fit" where the peak exceeds the
    device's memory. Chapter 09 is projected for the presets of its own task only; CPU-only chapters
    are left out.

    Example:
        >>> table(["qwen2.5-coder-0.5b"], ["a100-80gb"]).splitlines()[0]
        '| chapter | preset | A100 80GB: hours | A100 80GB: peak GB |'
    """
    from steerlib.presets import resolve_preset

    names = {d: DEVICES[d].name.removeprefix("NVIDIA ") for d in devices}
    head = "| chapter | preset | " + " | ".join(f"{names[d]}: hours | {names[d]}: peak GB" for d in devices) + " |"
    lines = [head, "|---|---|" + "---:|---:|" * len(devices)]
    for ch, spec in CHAPTERS.items():
        if spec.cpu_only:
            continue
        for name in presets:
            if ch == REAL_LM and resolve_preset(name).train_source != "gsm_symbolic":
                continue
            cells = []
            for dev in devices:
                p = plan(ch, name, dev, n_seeds=n_seeds, hint=False)
                cells += [f"{p.hours:,.1f}", f"{p.peak_gb:,.0f}" + ("" if p.fits else " (does not fit)")]
            lines.append(f"| {ch} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_table(minutes: Mapping[str, float], presets: Mapping[str, str]) -> str:
    """A markdown table of what each chapter took in the book's build (``minutes``: the build's
    ``book/build_times.json``; ``presets``: chapter -> the preset its page ran), and the whole build.

    Example:
        >>> build_table({"01_training": 2.3, "book": 60.0}, {"01_training": "organism"}).splitlines()[2]
        '| 01_training | organism | 2.3 |'
    """
    lines = ["| chapter | preset | minutes on 2 CPU cores |", "|---|---|---:|"]
    lines += [f"| {ch} | {presets.get(ch, '–')} | {minutes[ch]:,.1f} |" for ch in CHAPTERS if ch in minutes]
    shared = sum(v for k, v in minutes.items() if k.startswith(("organism-", "run-")))
    lines.append(f"| organisms and shared training runs (tasks of their own) | organism | {shared:,.1f} |")
    if "book" in minutes:
        lines.append(f"| the whole build (two tasks at a time) | | {minutes['book']:,.1f} |")
    return "\n".join(lines)


def this_device() -> str:
    """The :data:`DEVICES` key of this machine's accelerator (``cpu`` without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    name = torch.cuda.get_device_name().lower()
    gb = torch.cuda.get_device_properties(0).total_memory / 1e9
    return "h100" if "h100" in name else "l4" if "l4" in name else "t4" if "t4" in name else (
        "a100-80gb" if gb > 50 else "a100-40gb")


def chapter_plan(chapter: str, params: Mapping[str, Any], device: str | None = None, *,
                 preset: Any = None, gpus: int = 1) -> Plan:
    """The plan of ``chapter`` run with ``params`` (names of its parameters cell): what the chapter's
    setup prints and ``python -m steerlib.plan`` prints for the same parameters. ``preset``: the preset
    already resolved from ``params`` (else resolved here the way the chapter resolves it).

    Example:
        >>> chapter_plan("01_training", {"preset": "organism", "n_seeds": 1}, "cpu").hours < 0.5
        True
    """
    preset = preset if preset is not None else resolve_preset_for(params)
    layers = params.get("layers")
    return plan(chapter, preset, device or this_device(), layers=str(layers) if layers is not None else None,
                val_problems=int(params.get("val_problems", 200)), n_seeds=int(params.get("n_seeds", 1)), gpus=gpus)


def _what_fits(p: Plan, preset: Any, layers: Any, val_problems: int, n_seeds: int) -> str:
    """The first of ``max_new_tokens`` or ``prompts_per_step``, halved until the plan fits, that does."""
    import dataclasses

    for name in ("max_new_tokens", "prompts_per_step"):
        value = getattr(preset, name)
        while value > 1:
            value //= 2
            trial = plan(p.chapter, dataclasses.replace(preset, **{name: value}), p.device.split(" x ")[-1],
                         layers=layers, val_problems=val_problems, n_seeds=n_seeds, hint=False)
            if trial.fits:
                return f"{name} = {value} fits (peak {trial.peak_gb:.1f} GB)"
    return "no smaller completion budget or batch fits: choose a device with more memory"


def check_budget(p: Plan, max_hours: float) -> Plan:
    """Print the plan and refuse, in one line and before any weight is loaded, a run over ``max_hours``
    or over the device's memory. The line says what to change, in a Colab parameters cell and with
    papermill."""
    print(p.summary())
    if p.hours > max_hours:
        need = math.ceil(p.hours)
        raise RuntimeError(f"{p.chapter} is planned at {p.hours:.1f} h on {p.device}, over max_hours={max_hours:g}: "
                           f"to run it anyway set max_hours = {need} in the parameters cell (Colab), or pass "
                           f"-p max_hours {need} (papermill; make chapter ARGS=\"-p max_hours {need}\")")
    if not p.fits:
        raise MemoryError(f"{p.chapter} needs {p.peak_gb:.1f} GB at its peak on {p.device} "
                          f"({DEVICES[p.device.split(' x ')[-1]].memory_gb:g} GB): {p.fit_hint}; set it in the "
                          "parameters cell (Colab) or pass it with -p (papermill)")
    return p


def _parse(pairs: list[list[str]]) -> dict[str, Any]:
    """``-p NAME VALUE`` pairs as papermill reads them (numbers, booleans, None, text)."""
    out: dict[str, Any] = {}
    for name, value in pairs:
        text = value.strip()
        low = text.lower()
        if low in ("none", "null"):
            out[name] = None
        elif low in ("true", "false"):
            out[name] = low == "true"
        else:
            try:
                out[name] = int(text)
            except ValueError:
                try:
                    out[name] = float(text)
                except ValueError:
                    out[name] = text
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m steerlib.plan CHAPTER --preset NAME --device NAME [-p NAME VALUE ...]``: print the plan
    the chapter prints for the same parameters (its defaults for the rest); exit 2 with one line on a bad
    one."""
    import sys

    ap = argparse.ArgumentParser(prog="python -m steerlib.plan", description=__doc__.split("\n")[0])
    ap.add_argument("chapter", nargs="?", default=TRAINING)
    ap.add_argument("--preset", default=None, help="default: the chapter's")
    ap.add_argument("--device", default="a100-80gb", choices=sorted(DEVICES))
    ap.add_argument("--layers", default=None, help="chapter 02: 'all', '14,27' or '10-14'")
    ap.add_argument("--n-seeds", type=int, default=None, help="training seeds (default: the chapter's)")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="any other parameter of the chapter, as papermill takes it")
    ap.add_argument("--gpus", type=int, default=1, help="GPUs sharing each training step (data-parallel)")
    ap.add_argument("--table", action="store_true", help="print the cost page's table of planned GPU hours")
    args = ap.parse_args(argv)
    if args.table:
        print(table())
        return 0
    try:
        spec = chapter_spec(args.chapter)
        try:
            defaults = default_parameters(spec.name)
        except (ImportError, OSError):  # an installed steerlib without the sources: the parameters given only
            defaults = {}
        given = _parse(args.parameter)
        given.update({k: v for k, v in (("preset", args.preset), ("layers", args.layers), ("n_seeds", args.n_seeds))
                      if v is not None})
        unknown = sorted(set(given) - set(defaults)) if defaults else []
        if unknown:
            raise ValueError(f"{spec.name} has no parameter {', '.join(unknown)}; "
                             f"it takes: {', '.join(sorted(defaults))}")
        params = {**defaults, **given}
        p = chapter_plan(spec.name, params, args.device, gpus=args.gpus)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(p.summary())
    return 0


def resolve_preset_for(params: Mapping[str, Any]) -> Any:
    """The preset a chapter resolves from its parameters (its name and the overrides)."""
    from steerlib.presets import resolve_preset

    return resolve_preset(str(params.get("preset", "organism")),
                          **{k: params.get(k) for k in PRESET_PARAMETERS if k in params})


if __name__ == "__main__":
    raise SystemExit(main())

