"""Presenting results: learning curves from run folders (evaluation return and normalised
score against steps, and the training loss; runs with the same algo and data are one curve,
the mean over their seeds with a min-max band) and console tables."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import yaml

from rl_seq.runs import read_metrics


def _label(run_dir: Path) -> str:
    cfg_file = run_dir / "config.yaml"
    if cfg_file.exists():
        c = yaml.safe_load(cfg_file.read_text()) or {}
        mixer = (c.get("config") or {}).get("backbone", {}).get("mixer", "")
        return f"{c.get('algo', '?')}[{mixer}] {c.get('dataset') or c.get('env') or ''}".strip()
    return run_dir.name


def plot_runs(run_dirs: list[Path], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[list[dict]]] = defaultdict(list)
    for d in run_dirs:
        rows = read_metrics(d)
        if not rows:
            raise FileNotFoundError(f"{d} has no metrics.jsonl: is it a run folder?")
        groups[_label(Path(d))].append(rows)
    panels = [("eval", "mean_return", "evaluation return"),
              ("eval", "normalized_score", "normalised score"),
              ("train", "loss", "training loss")]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8))
    for ax, (kind, key, title) in zip(axes, panels):
        for label, runs in groups.items():
            curves = []
            for rows in runs:
                pts = [(r["step"], r[key]) for r in rows if r["kind"] == kind and r.get(key) is not None]
                if pts:
                    curves.append(dict(pts))
            if not curves:
                continue
            steps = sorted(set.intersection(*[set(c) for c in curves]))
            if not steps:
                continue
            ys = np.array([[c[s] for s in steps] for c in curves])
            line, = ax.plot(steps, ys.mean(0), label=f"{label} ({len(curves)} seed{'s' * (len(curves) > 1)})")
            if len(curves) > 1:
                ax.fill_between(steps, ys.min(0), ys.max(0), alpha=0.2, color=line.get_color())
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def print_table(title: str, header: list[str], rows: list[list]) -> None:
    """Print a rich table (floats to 3 significant digits)."""
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title)
    for h in header:
        t.add_column(h, justify="right")
    for r in rows:
        t.add_row(*[f"{v:,.3g}" if isinstance(v, float) else str(v) for v in r])
    Console().print(t)
