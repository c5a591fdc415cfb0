"""Every figure the commands draw, in one place: evaluate's score against the
target, search's curves and picks, ablate's series, calibrate's grid.

matplotlib is an extra (pip install "epsinas-onnx[eval]"), imported when a
plot is drawn; each figure is written atomically (never half-written), and
the path is checked before the work that fills it (check_plot_path).
"""

from __future__ import annotations

import math
import stat
from pathlib import Path

import numpy as np

from epsinas_onnx.core.atomic import write_atomically
from epsinas_onnx.core.errors import UserError
from epsinas_onnx.experiments.calibrate import recommend
from epsinas_onnx.experiments.search import PickResult, Targets, curve_targets, summary


def pyplot():
    """matplotlib.pyplot on the Agg backend, or one line naming the extra."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError('--plot needs matplotlib: pip install "epsinas-onnx[eval]"') from None
    return plt


def save(fig, path: Path) -> None:
    """Write `fig` atomically: never a half-written figure."""
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in fig.canvas.get_supported_filetypes():
        raise UserError(f"cannot write a plot as {path.name!r}: name it .png, .pdf or .svg")
    write_atomically(path, lambda f: fig.savefig(f, format=fmt))


def check_plot_path(path) -> Path:
    """A path a plot can be written to, checked before the work that draws it."""
    from epsinas_onnx.core.textfile import file_status

    path = Path(path)
    folder = file_status(path.parent, "the plot's folder")
    if folder is None or not stat.S_ISDIR(folder.st_mode):
        raise UserError(f"cannot write {path}: folder {path.parent} does not exist")
    file_status(path, "plot file")  # a name too long for the file system: one line now, not after the work
    if path.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise UserError(f"cannot write a plot as {path.name!r}: name it .png, .pdf or .svg")
    return path


def score_vs_target(report: dict, path, *, title: str | None = None) -> None:
    """Score vs target, one dot per architecture (NaN scores left out), coloured
    by parameter count: the paper's Fig. 1. Written to a temporary file, then
    renamed: never a half-written figure."""
    plt = pyplot()
    import matplotlib.colors as mcolors

    path = check_plot_path(path)
    points = report["points"]
    score = np.asarray(points["score"], dtype=np.float64)
    target = np.asarray(points["target"], dtype=np.float64)
    params = np.asarray(points["params"], dtype=np.float64)
    keep = np.isfinite(score) & np.isfinite(target)
    score, target, params = score[keep], target[keep], params[keep]
    stats = report["rows"][0]

    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=150)
    try:
        colour = params if np.isfinite(params).all() and len(params) else None
        norm = None
        if colour is not None and colour.min() > 0 and colour.max() > 10 * colour.min():
            norm = mcolors.LogNorm(colour.min(), colour.max())
        dots = ax.scatter(score, target, c=colour, s=5 if len(score) > 1000 else 14, cmap="viridis", norm=norm, linewidths=0)
        if colour is not None:
            fig.colorbar(dots, ax=ax, label="parameters")
        if len(score) and (score > 0).all():
            ax.set_xscale("log")
        ax.set_xlabel("epsinas score")
        ax.set_ylabel(report["target"] + (" (lower is better)" if report["lower_is_better"] else ""))
        head = title or f"{report['space']}" + (f" {report['dataset']}" if report["dataset"] else "")
        ax.set_title(
            f"{head}: \u03c1 = {stats['spearman']:.3f}, \u03c4 = {stats['kendall']:.3f}, "
            f"n = {stats['n']} ({stats['nan_dropped']} NaN dropped)",
            fontsize=9,
        )
        fig.tight_layout()
        save(fig, path)
    finally:
        plt.close(fig)


def search_curves(curves: dict[str, np.ndarray], targets: Targets, path, *, title: str = "") -> None:
    """Best target so far against trained architectures: the mean over runs
    (line) and the quartiles (band), one colour per variant (paper Fig. 5;
    the reference plots the median line, we plot the mean)."""
    plt = pyplot()
    path = check_plot_path(path)
    fig, ax = plt.subplots(figsize=(6.4, 4.6), dpi=150)
    try:
        lows = []
        for name, raw in curves.items():
            values = curve_targets(targets, raw)
            x = np.arange(1, values.shape[1] + 1)
            mean = np.nanmean(values, axis=0)
            q25, q75 = np.nanquantile(values, 0.25, axis=0), np.nanquantile(values, 0.75, axis=0)
            (line,) = ax.plot(x, mean, label=f"{name} ({values.shape[0]} runs)", linewidth=1.4)
            ax.fill_between(x, q25, q75, color=line.get_color(), alpha=0.12, linewidth=0)
            lows.append(mean[min(len(mean) - 1, max(len(mean) // 10, 1))])
        best = targets.best()
        if math.isfinite(best):
            ax.axhline(best, color="grey", linestyle=":", linewidth=1, label=f"best in the table ({best:.2f})")
        if lows and math.isfinite(best) and not targets.lower_is_better:
            low = min(lows)
            ax.set_ylim(low - 0.15 * (best - low), best + 0.1 * (best - low) + 1e-9)
        ax.set_xlabel("trained architectures")
        ax.set_ylabel(f"best {targets.name} so far" + (" (lower is better)" if targets.lower_is_better else ""))
        ax.set_title(title or "search", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right" if not targets.lower_is_better else "upper right")
        fig.tight_layout()
        save(fig, path)
    finally:
        plt.close(fig)


def pick_histogram(result: PickResult, targets: Targets, path, *, title: str = "") -> None:
    """Histogram of the picked architectures' targets."""
    plt = pyplot()
    path = check_plot_path(path)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=150)
    try:
        values = result.targets[np.isfinite(result.targets)]
        ax.hist(values, bins=40, color="tab:blue", alpha=0.8)
        stats = summary(values)
        ax.axvline(stats["mean"], color="black", linewidth=1, label=f"mean {stats['mean']:.2f} \u00b1 {stats['std']:.2f}")
        ax.set_xlabel(targets.name)
        ax.set_ylabel("runs")
        ax.set_title(title or f"pick 1 of {result.n}, {result.runs} runs", fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        save(fig, path)
    finally:
        plt.close(fig)


def ablation_series(rows: list[dict], kind: str, path, *, title: str = "") -> None:
    """Spearman and Kendall (global and top-10 %) per value; error bars are
    the standard deviation over draws. Batch sizes on a log axis (the paper's Fig. 6)."""
    plt = pyplot()
    path = check_plot_path(path)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=150)
    try:
        numeric = kind == "batch-size"
        x = np.array([r["value"] for r in rows], dtype=np.float64) if numeric else np.arange(len(rows))
        series = (("spearman", "Spearman \u03c1", "-o"), ("spearman_top10", "\u03c1 top-10 %", "--o"),
                  ("kendall", "Kendall \u03c4", "-s"), ("kendall_top10", "\u03c4 top-10 %", "--s"))
        for i, (key, label, style) in enumerate(series):
            y = np.array([r[key] for r in rows], dtype=np.float64)
            err = np.array([r.get(f"{key}_std", 0.0) for r in rows], dtype=np.float64)
            # categories: markers side by side, no lines between unrelated values
            xs, fmt = (x, style) if numeric else (x + (i - 1.5) * 0.08, style.lstrip("-"))
            ax.errorbar(xs, y, yerr=err if np.any(err) else None, fmt=fmt, markersize=4, capsize=2, label=label)
        if numeric:
            ax.set_xscale("log", base=2)
            ax.set_xticks(x, [str(int(v)) for v in x])
            ax.set_xlabel("batch size")
        else:
            ax.set_xticks(x, [str(r["value"]) for r in rows])
            ax.set_xlabel(kind)
        ax.axhline(0, color="grey", linewidth=0.6)
        ax.set_ylabel("rank correlation with the target")
        ax.set_title(title, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        save(fig, path)
    finally:
        plt.close(fig)


def calibration_grid(rows: list[dict], path, *, title: str = "") -> None:
    """Heat maps over (w_low, w_high): NaN rate, agreement, and Spearman (NaN
    dropped) when accuracies were given."""
    plt = pyplot()
    path = check_plot_path(path)
    lows = sorted({r["w_low"] for r in rows})
    highs = sorted({r["w_high"] for r in rows})
    panels = [("nan_rate", "NaN rate", "viridis_r"), ("agreement", "agreement (label-free)", "viridis")]
    if "spearman" in rows[0]:
        panels += [("spearman", "Spearman, NaN dropped", "RdBu"), ("spearman_nan_last", "Spearman, NaN last", "RdBu")]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.6), dpi=150)
    axes = np.atleast_1d(axes)
    pick = recommend(rows)
    try:
        for ax, (column, label, cmap) in zip(axes, panels):
            grid = np.full((len(lows), len(highs)), np.nan)
            for r in rows:
                grid[lows.index(r["w_low"]), highs.index(r["w_high"])] = r.get(column, math.nan)
            vmin, vmax = (-1, 1) if cmap == "RdBu" else (None, None)
            image = ax.imshow(grid, origin="lower", cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
            fig.colorbar(image, ax=ax, fraction=0.046)
            for i in range(len(lows)):
                for j in range(len(highs)):
                    if np.isfinite(grid[i, j]):
                        r, g, b, _ = image.cmap(image.norm(grid[i, j]))
                        ink = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
                        ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=5, color=ink)
            if pick is not None:
                ax.plot(highs.index(pick["w_high"]), lows.index(pick["w_low"]), "s", markersize=11,
                        markerfacecolor="none", markeredgecolor="red")
            ax.set_xticks(range(len(highs)), [f"{h:g}" for h in highs], rotation=90, fontsize=6)
            ax.set_yticks(range(len(lows)), [f"{w:g}" for w in lows], fontsize=6)
            ax.set_xlabel("w_high", fontsize=7)
            ax.set_ylabel("w_low", fontsize=7)
            ax.set_title(label, fontsize=8)
        fig.suptitle(title, fontsize=8)
        fig.tight_layout()
        save(fig, path)
    finally:
        plt.close(fig)
