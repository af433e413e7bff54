"""The book's figures, one function per kind (matplotlib + seaborn), titled and labelled like a paper's.

Each function returns the ``matplotlib.figure.Figure`` so a chapter can ``glue`` it. Every figure is
at most :data:`MAX_WIDTH` inches wide (900 px at the inline backend's 100 dpi, drawn at 2x for high-DPI
screens by :func:`steerlib.chapter.setup`); sizes follow the number of items (many labels give
horizontal bars, many rows a taller heatmap), and a colour scale that does not cover its data says so
in the panel's title.

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
    "token_highlights",
    "MAX_WIDTH",
    "SMALL",
]

#: Widest figure, inches (x 100 dpi = 900 px).
MAX_WIDTH = 8.8
#: The smallest text in any figure, points: legends, tick labels and heatmap numbers (9 pt at 100 dpi is
#: 12.5 px, still above 9 px on a page column 650 px wide, where a 900 px figure is shown scaled down).
SMALL = 9

sns.set_theme(context="notebook", style="whitegrid", rc={"legend.fontsize": SMALL, "legend.title_fontsize": SMALL})


def pretraining_curve(history: dict[str, list], title: str = "Pretraining the organism") -> Any:
    """Loss and greedy worked-mode accuracy (validation) over pretraining steps."""
    fig, ax = plt.subplots(1, 2, figsize=(MAX_WIDTH, 3.2))
    ax[0].plot(history["step"], history["loss"], color="C0")
    ax[0].set(xlabel="step", ylabel="loss (completion tokens)", yscale="log", title="training loss")
    ax[1].plot(history["eval_step"], history["greedy_worked_accuracy"], marker="o", color="C2")
    ax[1].set(
        xlabel="step", ylabel="accuracy", ylim=(-0.02, 1.02), title='greedy accuracy, " Step" forced\n(validation)'
    )
    fig.suptitle(title)
    fig.tight_layout()
    plt.close(fig)  # shown once, by the cell that returns it
    return fig


def training_curves(metrics: Sequence[dict[str, Any]], title: str, opener: str = " Step") -> Any:
    """Reward, vector norm, opener share of first tokens and completion length over RLOO steps."""
    steps = [m["step"] for m in metrics]
    fig, ax = plt.subplots(2, 2, figsize=(MAX_WIDTH, 5.4))
    ax = ax.ravel()
    ax[0].plot(steps, [m["reward_mean"] for m in metrics])
    ax[0].set(xlabel="step", ylabel="mean reward", ylim=(-0.02, 1.02), title="reward")
    if metrics and "vector_norms" in metrics[0]:
        for key in metrics[0]["vector_norms"]:
            ax[1].plot(steps, [m["vector_norms"][key] for m in metrics], label=f"layer {key.split(':')[0]}")
        if len(metrics[0]["vector_norms"]) <= 8:
            ax[1].legend(fontsize=SMALL, ncols=2)
    ax[1].set(xlabel="step", ylabel="|s|", title="vector norm")
    ax[2].plot(steps, [m["first_tokens_top5"].get(opener, 0.0) for m in metrics], color="C2")
    label = opener.strip() or repr(opener)  # a whitespace token is shown quoted
    ax[2].set(xlabel="step", ylabel="share", ylim=(-0.02, 1.02), title=f'first token = "{label}"')
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
    per_seed: dict[int, dict[int, float]] | None = None,
) -> Any:
    """pass@1 of a vector per layer (error bars) with horizontal baselines (the paper's Figure 1).

    ``others``: more per-layer series, name -> (values, errors). ``per_seed``: each training seed's
    value per layer, drawn as small points beside the main series (which is then their mean).
    """
    layers = sorted(per_layer)
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    for i, (seed, vals) in enumerate((per_seed or {}).items()):
        ls = sorted(vals)
        ax.scatter([l + 0.12 * (i - (len(per_seed or {}) - 1) / 2) for l in ls], [vals[l] for l in ls], s=14,
                   color="grey", alpha=0.7, zorder=1, label="one training seed" if i == 0 else None)
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
    ax.legend(fontsize=SMALL, loc="lower right")
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
    ax.legend(fontsize=SMALL, loc="lower right")
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
    """Heatmaps, one colour scale for all panels (NaN cells left blank), laid out to fit the page.

    Cells are annotated when they are large enough to read; panels sit side by side when they fit
    :data:`MAX_WIDTH`, else two per row. When the data reach beyond ``vmin``/``vmax`` the panel's title
    says so and names the extreme value.
    """
    import numpy as np

    arrays = {name: np.asarray(m, dtype=float) for name, m in mats.items()}
    every = np.concatenate([m[np.isfinite(m)] for m in arrays.values()])
    if every.size:  # one scale for every panel: the one colour bar must read for all of them
        vmin = float(every.min()) if vmin is None else vmin
        vmax = float(every.max()) if vmax is None else vmax
    rows, cols = max(m.shape[0] for m in arrays.values()), max(m.shape[1] for m in arrays.values())
    ytick_chars = max((len(str(t)) for t in (yticks or [])), default=2)
    panel_w = max(2.6, 0.5 * cols + 0.9 + 0.07 * ytick_chars)
    per_row = max(1, min(len(arrays), int(MAX_WIDTH // panel_w)))
    n_rows = -(-len(arrays) // per_row)
    width = min(MAX_WIDTH, panel_w * per_row + 0.8)
    height = n_rows * min(9.0, max(2.6, 0.32 * rows + 1.5))
    # constrained layout places the one colour bar beside all panels (seaborn's per-panel bar, drawn on one
    # panel of a grid, squeezed that panel and overlapped its neighbour under tight_layout)
    fig, axes = plt.subplots(n_rows, per_row, figsize=(width, height), squeeze=False, layout="constrained")
    annotate = (width / per_row) / cols >= 0.45 and (height / n_rows) / rows >= 0.22  # room for a 9 pt "-0.12"
    flat = list(axes.ravel())
    for ax, (name, m) in zip(flat, arrays.items()):
        xl = list(xticks) if xticks is not None else list(range(m.shape[1]))
        yl = list(yticks) if yticks is not None else list(range(m.shape[0]))
        finite = m[np.isfinite(m)]
        notes = []
        if vmin is not None and finite.size and finite.min() < vmin:
            notes.append(f"colours clipped at {vmin:g}; lowest {finite.min():.2f}")
        if vmax is not None and finite.size and finite.max() > vmax:
            notes.append(f"colours clipped at {vmax:g}; highest {finite.max():.2f}")
        sns.heatmap(
            m,
            annot=annotate,
            fmt=fmt,
            cmap=cmap,
            vmin=vmin,
            vmax=vmax,
            center=0 if cmap == "vlag" else None,
            xticklabels=xl,
            yticklabels=yl,
            ax=ax,
            cbar=False,
            annot_kws={"size": SMALL},
        )
        ax.tick_params(axis="y", rotation=0, labelsize=SMALL)
        ax.tick_params(axis="x", labelsize=SMALL)
        ax.set(xlabel=xlabel, ylabel=ylabel)
        ax.set_title(name + ("\n(" + "; ".join(notes) + ")" if notes else ""), fontsize=9)
    for ax in flat[len(arrays):]:
        ax.set_visible(False)
    fig.colorbar(flat[0].collections[0], ax=flat[: len(arrays)], shrink=0.9, aspect=30)
    fig.suptitle(title, fontsize=11)
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
    ax.legend(fontsize=SMALL)
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
    horizontal: bool | None = None,
) -> Any:
    """Bars (optional error bars) with labelled reference lines.

    ``horizontal`` (default: when there are more than six bars or a label over 14 characters) lays the
    bars out as rows, so every label is readable and the height follows the number of bars; the value
    axis is then the x axis and the reference lines are vertical, with the legend below the plot.
    """
    names = list(values)
    if horizontal is None:
        horizontal = len(names) > 6 or max((len(n) for n in names), default=0) > 14
    errs = [(errors or {}).get(n, 0) for n in names]
    styles = ["--", ":", "-.", (0, (5, 1)), (0, (1, 1))]
    if horizontal:
        fig, ax = plt.subplots(figsize=(MAX_WIDTH * 0.85, 0.3 * len(names) + 1.6 + 0.25 * len(lines or {})))
        ax.barh(names, [values[n] for n in names], xerr=errs, capsize=2, color="C0")
        ax.invert_yaxis()
        for i, (name, v) in enumerate((lines or {}).items()):
            ax.axvline(v, ls=styles[i % len(styles)], color=f"C{i + 1}", label=name)
        ax.set(xlabel=ylabel, title=title, xlim=ylim)
        ax.tick_params(axis="y", labelsize=SMALL)
        if lines:
            ax.legend(fontsize=SMALL, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=min(4, len(lines)))
    else:
        fig, ax = plt.subplots(figsize=(min(MAX_WIDTH, max(5.5, 0.9 * len(names) + 2.5)), 3.6))
        ax.bar(names, [values[n] for n in names], yerr=errs, capsize=3, color="C0")
        for i, (name, v) in enumerate((lines or {}).items()):
            ax.axhline(v, ls=styles[i % len(styles)], color=f"C{i + 1}", label=name)
        ax.set(ylabel=ylabel, title=title, ylim=ylim)
        if lines:
            ax.legend(fontsize=SMALL, loc="best")
    fig.tight_layout()
    plt.close(fig)  # shown once, by the cell that returns it
    return fig


def position_curve(curves: dict[str, Sequence[float]], title: str, *, ylabel: str, log: bool = True) -> Any:
    """A value per completion position (0 = first generated token), one line per curve."""
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    for i, (name, ys) in enumerate(curves.items()):
        ax.plot(range(len(ys)), ys, marker="o", ms=3, label=name, color=f"C{i}")
    ax.set(
        xlabel="completion position (0 = first generated token)",
        ylabel=ylabel,
        title=title,
        yscale="log" if log else "linear",
    )
    ax.legend(fontsize=SMALL)
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
    ax.legend(fontsize=SMALL)
    fig.tight_layout()
    plt.close(fig)  # shown once, by the cell that returns it
    return fig


class _Highlights:
    """HTML text whose token backgrounds encode a value (see :func:`token_highlights`)."""

    def __init__(self, html: str) -> None:
        self.html = html

    def _repr_html_(self) -> str:
        return self.html


def token_highlights(tokens: Sequence[str], values: Sequence[float], title: str, *, label: str) -> Any:
    """A token sequence as text, each token's background shaded by its value (white = 0, the darkest
    = the sequence's largest value), with the value in the tooltip and a scale line under the text.

    Example:
        >>> "<span" in token_highlights(["a", " b"], [0.0, 1.0], "t", label="v")._repr_html_()
        True
    """
    import html as _html

    top = max((abs(float(v)) for v in values), default=0.0) or 1.0
    spans = []
    for t, v in zip(tokens, values):
        a = min(1.0, abs(float(v)) / top)
        text = _html.escape(t).replace("\n", "↵<br>")
        spans.append(f'<span title="{float(v):.3f}" style="background: rgba(214, 96, 77, {a:.2f}); '
                     f'border-radius: 2px; white-space: pre-wrap">{text}</span>')
    scale = " ".join(f'<span style="background: rgba(214, 96, 77, {a}); padding: 0 6px">{a * top:.2f}</span>'
                     for a in (0.0, 0.25, 0.5, 0.75, 1.0))
    return _Highlights(
        '<div style="max-width: 880px; text-align: left">'
        f'<p style="font-weight: 600; margin-bottom: 4px">{_html.escape(title)}</p>'
        f'<div style="font-family: monospace; font-size: 0.85em; line-height: 1.7">{"".join(spans)}</div>'
        f'<p style="font-size: 0.8em; margin-top: 6px">{_html.escape(label)}: {scale}</p></div>'
    )
