"""Training curves and metrics written next to a trained model.

>>> from training.curves import write_training_report
>>> write_training_report(trainer.state.log_history, Path("data/models/tiny/aria-ft-sft"), {})
"""

from __future__ import annotations

from pathlib import Path

from aria.files import atomic_write_json

METRICS_FILE = "training_metrics.json"
LOSS_PLOT = "loss.png"


def loss_points(log_history: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one logged metric, in step order."""
    points = sorted((row["step"], row[key]) for row in log_history if key in row and "step" in row)
    return [s for s, _ in points], [v for _, v in points]


def plot_losses(log_history: list[dict], path: Path, title: str) -> None:
    """A PNG with the training loss and, when logged, the evaluation loss, against the step."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, name in (("loss", "train"), ("eval_loss", "eval")):
        steps, values = loss_points(log_history, key)
        if steps:
            ax.plot(steps, values, marker="o" if key == "eval_loss" else None, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_training_report(
    log_history: list[dict], out_dir: Path, metrics: dict, title: str
) -> dict:
    """Write training_metrics.json (metrics + the log history) and loss.png into `out_dir`."""
    out_dir = Path(out_dir)
    report = {**metrics, "log_history": log_history}
    atomic_write_json(out_dir / METRICS_FILE, report)
    plot_losses(log_history, out_dir / LOSS_PLOT, title)
    return report
