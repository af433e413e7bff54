"""The book's figures, one function per kind (matplotlib + seaborn), titled and labelled like a paper's.

Each function returns the ``matplotlib.figure.Figure`` so a chapter can ``glue`` it.

Example:
    >>> fig = training_curves(metrics, title="Last-layer vector")  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import seaborn as sns

__all__ = [
    "pretraining_curve",
    "training_curves",
    "first_token_bars",
    "layer_curve",
    "mode_shares",
    "leverage",
    "heatmaps",
    "scatter",
    "bars",
    "position_curve",
    "curves",
]

sns.set_theme(context="notebook", style="whitegrid")


def pretraining_curve(history: dict[str, list], title: str = "Pretraining the organism") -> Any:
    """Loss and greedy worked-mode accuracy (validation) over pretraining steps."""
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.4))
    ax[0].plot(history["step"], history["loss"], color="C0")
    ax[0].set(xlabel="step", ylabel="loss (completion tokens)", yscale="log", title="training loss")
    ax[1].plot(history["eval_step"], history["greedy_worked_accuracy"], marker="o", color="C2")
    ax[1].set(
        xlabel="step", ylabel="accuracy", ylim=(-0.02, 1.02), title='greedy accuracy, " Step" forced (validation)'
    )
    fig.suptitle(title)
    fig.tight_layout()
    plt.close(fig)  # shown once, by the cell that returns it
    return fig


def training_curves(metrics: Sequence[dict[str, Any]], title: str, opener: str = " Step") -> Any:
    """Reward, vector norm, opener share of first tokens and completion length over RLOO steps."""
    steps = [m["step"] for m in metrics]
    fig, ax = plt.subplots(1, 4, figsize=(15, 3.2))
    ax[0].plot(steps, [m["reward_mean"] for m in metrics])
    ax[0].set(xlabel="step", ylabel="mean reward", ylim=(-0.02, 1.02), title="reward")
    if metrics and "vector_norms" in metrics[0]:
        for key in metrics[0]["vector_norms"]:
            ax[1].plot(steps, [m["vector_norms"][key] for m in metrics], label=f"layer {key.split(':')[0]}")
        if len(metrics[0]["vector_norms"]) <= 8:
            ax[1].legend(fontsize=8)
    ax[1].set(xlabel="step", ylabel="|s|", title="vector norm")
    ax[2].plot(steps, [m["first_tokens_top5"].get(opener, 0.0) for m in metrics], color="C2")
    ax[2].set(xlabel="step", ylabel="share", ylim=(-0.02, 1.02), title=f'first token = "{opener.strip()}"')
    ax[3].plot(steps, [m["mean_completion_length"] for m in metrics], color="C3")
    ax[3].set(xlabel="step", ylabel="tokens", title="completion length")
    fig.suptitle(title)
    fig.tight_layout()
    plt.close(fig)  # shown once, by the cell that returns it
    return fig


def first_token_bars(shares: dict[str, dict[str, float]], title: str = "First generated token") -> Any:
    """Grouped bars: condition -> {token: share}."""
    import pandas as pd

    rows = [{"condition": c, "token": repr(t), "share": s} for c, d in shares.items() for t, s in d.items()]
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    sns.barplot(pd.DataFrame(rows), x="token", y="share", hue="condition", ax=ax)
    ax.set(ylim=(0, 1.02), title=title, xlabel="first token", ylabel="share of samples")
    fig.tight_layout()
    plt.close(fig)  # shown once, by the cell that returns it
    return fig


def mode_shares(
    labels: Sequence[str], pass_at_1: Sequence[float], errors: Sequence[float], title: str = "pass@1 by answer mode"
) -> Any:
    """Bars with error bars, one per condition (e.g. base / forced worked / forced direct)."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.bar(labels, pass_at_1, yerr=errors, capsize=4, color=[f"C{i}" for i in range(len(labels))])
    ax.set(ylim=(0, 1.02), ylabel="pass@1 (τ = 1)", title=title)
    fig.tight_layout()
    plt.close(fig)  # shown once, by the cell that returns it
    return fig


def layer_curve(
    per_layer: dict[int, float],
    errors: dict[int, float],
    baselines: dict[str, float],
    title: str = "Single-layer steering vectors",
    *,
    label: str = "single-layer vector",
    others: dict[str, tuple[dict[int, float], dict[int, float]]] | None = None,
) -> Any:
    """pass@1 of a vector per layer (error bars) with horizontal baselines (the paper's Figure 1).

    ``others``: more per-layer series, name -> (values, errors).
    """
    layers = sorted(per_layer)
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    series = {label: (per_layer, errors), **(others or {})}
    for i, (name, (vals, errs)) in enumerate(series.items()):
        ls = sorted(vals)
        ax.errorbar(
            ls,
            [vals[l] for l in ls],
            yerr=[errs.get(l, 0) for l in ls],
            marker="os^D"[i % 4],
            capsize=3,
            label=name,
            color=f"C{0 if i == 0 else 5 + i}",
        )
    styles = ["--", ":", "-.", (0, (5, 1)), (0, (1, 1))]
    for i, (name, value) in enumerate(baselines.items()):
        ax.axhline(value, ls=styles[i % len(styles)], color=f"C{i + 1}", label=name)
    ax.set(xlabel="layer", ylabel="pass@1 (τ = 1, held-out)", ylim=(0, 1.02), xticks=layers, title=title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    plt.close(fig)  # shown once, by the cell that returns it
    return fig


def leverage(
    curve: Sequence[dict[str, float]], forced: float, base: float, title: str = "Leverage of a last-layer opener bias"
) -> Any:
    """P(opener first) and pass@1 against the vector's norm (as a fraction of the median residual norm)."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    r = [c["ratio"] for c in curve]
    ax.plot(r, [c["p_opener"] for c in curve], marker="o", label='P(" Step" first)')
    ax.plot(r, [c["pass_at_1"] for c in curve], marker="s", label="pass@1 with the vector")
    ax.axhline(forced, ls="--", color="C2", label='pass@1, " Step" forced')
    ax.axhline(base, ls=":", color="C3", label="pass@1, base")
    ax.set(xlabel="|s| / median last-layer residual norm", ylabel="probability / pass@1", ylim=(0, 1.02), title=title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    plt.close(fig)  # shown once, by the cell that returns it
    return fig


def heatmaps(
    mats: dict[str, Any],
    title: str,
    *,
    xlabel: str,
    ylabel: str,
    xticks: Sequence[Any] | None = None,
    yticks: Sequence[Any] | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "vlag",
    fmt: str = ".2f",
) -> Any:
    """Annotated heatmaps side by side (NaN cells left blank); one colour scale for all panels."""
    import numpy as np

    fig, axes = plt.subplots(1, len(mats), figsize=(4.6 * len(mats) + 0.6, 4.0), squeeze=False)
    for ax, (name, m) in zip(axes[0], mats.items()):
        m = np.asarray(m, dtype=float)
        xl = list(xticks) if xticks is not None else list(range(m.shape[1]))
        yl = list(yticks) if yticks is not None else list(range(m.shape[0]))
        sns.heatmap(
            m,
            annot=True,
            fmt=fmt,
            cmap=cmap,
            vmin=vmin,
            vmax=vmax,
            center=0 if cmap == "vlag" else None,
            xticklabels=xl,
            yticklabels=yl,
            ax=ax,
            cbar=ax is axes[0][-1],
            annot_kws={"size": 8},
        )
        ax.tick_params(axis="y", rotation=0)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=name)
    fig.suptitle(title)
    fig.tight_layout()
    plt.close(fig)  # shown once, by the cell that returns it
    return fig


def scatter(
    rows: Sequence[dict[str, float]], x: str, ys: dict[str, str], title: str, *, xlabel: str, ylabel: str
) -> Any:
    """One marker series per ``ys`` entry (column -> legend label) against column ``x``."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for i, (col, label) in enumerate(ys.items()):
        ax.scatter([r[x] for r in rows], [r[col] for r in rows], label=label, color=f"C{i}", alpha=0.8)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)  # shown once, by the cell that returns it
    return fig


def bars(
    values: dict[str, float],
    title: str,
    *,
    ylabel: str,
    errors: dict[str, float] | None = None,
    lines: dict[str, float] | None = None,
    ylim: tuple[float, float] | None = (0, 1.02),
    rotate: bool = False,
) -> Any:
    """Bars (optional error bars) with labelled horizontal reference lines."""
    names = list(values)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(names) + 2.5), 3.8))
    ax.bar(names, [values[n] for n in names], yerr=[(errors or {}).get(n, 0) for n in names], capsize=3, color="C0")
    styles = ["--", ":", "-.", (0, (5, 1)), (0, (1, 1))]
    for i, (name, v) in enumerate((lines or {}).items()):
        ax.axhline(v, ls=styles[i % len(styles)], color=f"C{i + 1}", label=name)
    ax.set(ylabel=ylabel, title=title, ylim=ylim)
    if rotate:
        ax.tick_params(axis="x", rotation=60)
    if lines:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    plt.close(fig)  # shown once, by the cell that returns it
    return fig


def position_curve(curves: dict[str, Sequence[float]], title: str, *, ylabel: str, log: bool = True) -> Any:
    """A value per completion position (0 = first generated token), one line per curve."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for i, (name, ys) in enumerate(curves.items()):
        ax.plot(range(len(ys)), ys, marker="o", ms=3, label=name, color=f"C{i}")
    ax.set(
        xlabel="completion position (0 = first generated token)",
        ylabel=ylabel,
        title=title,
        yscale="log" if log else "linear",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)  # shown once, by the cell that returns it
    return fig


def curves(
    x: Sequence[float],
    ys: dict[str, Sequence[float]],
    title: str,
    *,
    xlabel: str,
    ylabel: str,
    lines: dict[str, float] | None = None,
    symlog: bool = False,
    ylim: tuple[float, float] | None = (0, 1.02),
) -> Any:
    """One line per ``ys`` entry against ``x``, with labelled horizontal reference lines."""
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    for i, (name, y) in enumerate(ys.items()):
        ax.plot(x, y, marker="o", ms=4, label=name, color=f"C{i}")
    for i, (name, v) in enumerate((lines or {}).items()):
        ax.axhline(v, ls=["--", ":", "-."][i % 3], color=f"C{len(ys) + i}", label=name)
    if symlog:
        ax.set_xscale("symlog", linthresh=1.0)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, ylim=ylim)
    ax.legend(fontsize=8)
    fig.tight_layout()
    plt.close(fig)  # shown once, by the cell that returns it
    return fig
