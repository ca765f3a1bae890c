"""Every picture the toolkit draws: a training run's curves, a paired comparison, a sweep, a loss surface.

Callers hand over plain rows (a Trainer's log history, summary.json dicts, CSV rows, a grid of values) and get the
PNG's path back. Figures are built on matplotlib's object API (`Figure`, no pyplot): nothing here touches the
process-wide backend or keeps a figure alive, so drawing works headless and inside a notebook alike.
"""
from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

# The comparison's bars: rates in [0, 1] (and evaluation's unscaled reward, also in [0, 1]) on one axis.
COMPARED = [("avg_reward", "avg reward"), ("pass@1", "pass@1"), ("compile_rate", "compiles"),
            ("partial_rate", "partial"), ("compiled_zero_rate", "0 tests pass"), ("compile_error_rate", "compile error"),
            ("no_code_rate", "no code")]


def save(fig: Figure, path: Path) -> Path:
    """Write a finished figure to `path` (its folder is created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def training_curves(log_history: list[dict], path: Path, title: str = "") -> Path | None:
    """A GRPO run's curves by step: mean reward with its ± std band, and the judge's full-pass, compile and no-code
    rates, with validation pass@1 as points when the run validated; an SFT run's training loss by step. None when
    no step was logged."""
    steps = [e for e in log_history if e.get("reward") is not None]
    if not steps:
        return _loss_curve([e for e in log_history if "loss" in e], path, title)
    x = [e["step"] for e in steps]
    fig = Figure(figsize=(11, 4))
    reward_ax, rate_ax = fig.subplots(1, 2)
    mean = [e["reward"] for e in steps]
    std = [e.get("reward_std") or 0.0 for e in steps]
    reward_ax.plot(x, mean, marker=".", label="mean reward")
    reward_ax.fill_between(x, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], alpha=0.2,
                           label="± std over the step's completions")
    reward_ax.set_ylabel("training reward")
    # dashed over solid: full pass often equals compiles on easy problems and must stay visible
    for key, label, style in (("judge/compile_rate", "compiles", "-"), ("judge/full_pass_rate", "full pass", "--"),
                              ("judge/no_code_rate", "no code", ":")):
        rate_ax.plot(x, [e.get(key) for e in steps], style, marker=".", linewidth=2, label=label)
    validated = [e for e in log_history if "val/pass@1" in e]
    if validated:
        rate_ax.plot([e["step"] for e in validated], [e["val/pass@1"] for e in validated], "k*", markersize=9,
                     label="validation pass@1 (greedy, held out)")
    rate_ax.set_ylabel("fraction of completions")
    rate_ax.set_ylim(-0.03, 1.03)
    for ax in (reward_ax, rate_ax):
        _by_step(ax)
        ax.set_xlim(x[0] - 0.5, x[-1] + 0.5)  # whole steps as ticks, also for a one-step run
    if title:
        fig.suptitle(title, fontsize=10)
    return save(fig, path)


def _by_step(ax) -> None:
    """A training curve's x axis (whole optimizer steps), grid and legend."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlabel("optimizer step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _loss_curve(steps: list[dict], path: Path, title: str) -> Path | None:
    """An SFT run's training loss (the answer tokens' cross-entropy) by step; None when no step was logged."""
    if not steps:
        return None
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot([e["step"] for e in steps], [e["loss"] for e in steps], marker=".", label="training loss")
    ax.set_ylabel("cross-entropy of the answer tokens")
    _by_step(ax)
    if title:
        fig.suptitle(title, fontsize=10)
    return save(fig, path)


def comparison_bars(a: dict, b: dict, result: dict, path: Path) -> Path:
    """Paired bars (A beside B) for the rates both summaries hold, titled with the paired tests' verdict."""
    import numpy as np

    shown = [(key, label) for key, label in COMPARED if key in a["metrics"] and key in b["metrics"]]
    x = np.arange(len(shown))
    fig = Figure(figsize=(10, 5))
    ax = fig.subplots()
    for offset, summary, name in ((-0.2, a, "A"), (0.2, b, "B")):
        values = [summary["metrics"][key] for key, _ in shown]
        bars = ax.bar(x + offset, values, width=0.4, label=f"{name}: {summary.get('label', name)}")
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(x, [label for _, label in shown])
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("fraction of samples (reward: mean)")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2)  # below: bars reach 1.0 anywhere
    low, high = result["reward_ci"]
    ax.set_title(f"{result['problems']} paired problems: Δ avg reward {result['reward_diff']:+.3f} "
                 f"[{low:+.3f}, {high:+.3f}] (95% bootstrap); McNemar p = {result['mcnemar_p']:.3g}", fontsize=9)
    return save(fig, path)


def sweep_points(rows: list[dict], path: Path) -> Path:
    """A sweep's pass@1 and average reward against trainable parameters (log scale), one series per tie mode
    and rank, each point labelled with its learning rate."""
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    series: dict[str, list[dict]] = {}
    for row in rows:
        series.setdefault(f"tie={row['tie']}, r={row['rank']}", []).append(row)
    for ax, metric, label in zip(axes, ("pass@1", "avg_reward"), ("pass@1", "average reward")):
        for name, points in series.items():
            ax.scatter([int(p["trainable"]) for p in points], [float(p[metric]) for p in points], label=name)
            for p in points:
                ax.annotate(f"lr {float(p['learning_rate']):g}", (int(p["trainable"]), float(p[metric])), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return save(fig, path)


def heatmap(values: list[list[float]], axis: list[float], label: str, path: Path) -> Path:
    """`values[i][j]` at (v1, v2) = (axis[j], axis[i]) over the square grid, with the base model (v = 0) marked."""
    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    half = (axis[1] - axis[0]) / 2  # each pixel is centred on its grid point
    extent = (axis[0] - half, axis[-1] + half, axis[0] - half, axis[-1] + half)
    image = ax.imshow(values, origin="lower", extent=extent, aspect="auto", cmap="viridis")
    fig.colorbar(image, ax=ax, label=label)
    ax.plot(0, 0, "r+", markersize=12, label="base model (v = 0)")
    ax.set_xlabel("v1")
    ax.set_ylabel("v2")
    ax.legend(loc="upper right", fontsize=8)
    return save(fig, path)
