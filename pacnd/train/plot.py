"""Training-curve PNG (matplotlib's Agg canvas; no pyplot, no global state)."""

from __future__ import annotations

import numbers

__all__ = ["plot_curves"]


def _series(rows, key):
    xs, ys = [], []
    for r in rows:
        v = r.get(key)
        if isinstance(v, numbers.Real) and not isinstance(v, bool):
            xs.append(r["step"])
            ys.append(float(v))
    return xs, ys


def plot_curves(path, train_rows, eval_rows=(), *, title=None):
    """Write a PNG with the training loss (and every numeric eval metric) vs
    step, atomically. Returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..io.checkpoint import atomic_write

    eval_keys = []
    for r in eval_rows:
        for k in r:
            if k != "step" and k not in eval_keys and _series([r], k)[0]:
                eval_keys.append(k)
    n = 1 + (1 if eval_keys else 0)
    fig = Figure(figsize=(6.4, 3.2 * n), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(n, 1, 1)
    xs, ys = _series(train_rows, "loss")
    if xs:
        ax.plot(xs, ys, lw=1, label="train loss")
        if min(ys) > 0:
            ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right")
    if title:
        ax.set_title(title)
    if eval_keys:
        ax2 = fig.add_subplot(n, 1, 2)
        for k in eval_keys:
            ex, ey = _series(eval_rows, k)
            ax2.plot(ex, ey, marker="o", ms=3, lw=1, label=k)
        ax2.set_xlabel("step")
        ax2.set_ylabel("evaluation")
        ax2.grid(True, alpha=0.3)
        ax2.legend(loc="upper right")
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png"))
    return path
