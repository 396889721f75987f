"""The statistics of a verdict: paired comparisons against a baseline and rankings across settings.

    paired_comparison   setting vs baseline on the same (dataset, horizon, seed) blocks: mean
                        difference with a 95 % percentile-bootstrap interval, the Wilcoxon
                        signed-rank p-value (scipy), wins / ties / losses (lower is better)
    friedman            the Friedman test over blocks x settings (scipy) and average ranks
    critical_difference Nemenyi's critical difference of average ranks (Demšar, JMLR 2006)
    plot_critical_difference   the CD diagram (PNG)
"""
import math

import numpy as np


def bootstrap_interval(differences: np.ndarray, resamples: int = 10_000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of paired differences [n]."""
    generator = np.random.default_rng(seed)
    indices = generator.integers(0, len(differences), size=(resamples, len(differences)))
    means = differences[indices].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def paired_comparison(values: np.ndarray, baseline: np.ndarray, tie_tolerance: float = 1e-12) -> dict:
    """values, baseline [n]: the metric of the setting and of the baseline on the same n blocks."""
    from scipy.stats import wilcoxon

    values, baseline = np.asarray(values, dtype=float), np.asarray(baseline, dtype=float)
    if values.shape != baseline.shape or values.ndim != 1 or len(values) == 0:
        raise ValueError(f"paired comparison needs two equal-length non-empty vectors, got {values.shape} and {baseline.shape}")
    differences = values - baseline
    low, high = bootstrap_interval(differences)
    ties = np.abs(differences) <= tie_tolerance * np.maximum(np.abs(baseline), 1.0)
    nonzero = differences[~ties]
    p_value = float(wilcoxon(nonzero).pvalue) if len(nonzero) > 0 else 1.0
    return {
        "n": len(values), "mean_difference": float(differences.mean()), "interval": (low, high),
        "wilcoxon_p": p_value, "wins": int(((differences < 0) & ~ties).sum()), "ties": int(ties.sum()),
        "losses": int(((differences > 0) & ~ties).sum()),
    }


def average_ranks(table: np.ndarray) -> np.ndarray:
    """table [blocks, settings] (lower is better) -> each setting's mean rank (ties share ranks)."""
    from scipy.stats import rankdata

    return rankdata(table, axis=1).mean(axis=0)


def friedman(table: np.ndarray) -> dict:
    """Friedman test over table [blocks, settings]; needs at least 3 settings and 2 blocks."""
    from scipy.stats import friedmanchisquare

    table = np.asarray(table, dtype=float)
    if table.ndim != 2 or table.shape[1] < 3 or table.shape[0] < 2:
        raise ValueError(f"the Friedman test needs >= 2 blocks and >= 3 settings, got a table of shape {table.shape}")
    statistic, p_value = friedmanchisquare(*table.T)
    return {"statistic": float(statistic), "p_value": float(p_value), "average_ranks": average_ranks(table).tolist()}


def critical_difference(settings: int, blocks: int, alpha: float = 0.05) -> float:
    """Nemenyi: q_alpha sqrt(k (k + 1) / (6 N)), q_alpha the studentized range quantile / sqrt(2)."""
    from scipy.stats import studentized_range

    q_alpha = studentized_range.ppf(1 - alpha, settings, np.inf) / math.sqrt(2)
    return float(q_alpha * math.sqrt(settings * (settings + 1) / (6 * blocks)))


def plot_critical_difference(names: list, ranks: list, cd: float, path: str, title: str) -> None:
    """Settings on a rank axis (best left); a bar joins settings whose ranks differ by less than cd."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(ranks)
    count = len(names)
    figure, axis = plt.subplots(figsize=(8, 1.6 + 0.35 * count))
    axis.set_xlim(0.5, count + 0.5)
    axis.set_ylim(-count - 1.5, 1.5)
    axis.axhline(0, color="black", linewidth=1)
    for rank in range(1, count + 1):
        axis.plot([rank, rank], [0, 0.15], color="black", linewidth=1)
        axis.text(rank, 0.35, str(rank), ha="center", fontsize=9)
    for line, index in enumerate(order):
        y = -(line + 1)
        axis.plot([ranks[index], ranks[index]], [0, y], color="tab:blue", linewidth=0.8)
        axis.text(count + 0.45 if line >= count / 2 else 0.55, y, f"{names[index]} ({ranks[index]:.2f})",
                  ha="right" if line >= count / 2 else "left", va="center", fontsize=9)
        axis.plot([ranks[index], count + 0.4 if line >= count / 2 else 0.6], [y, y], color="tab:blue", linewidth=0.8)
    # Groups not significantly different: maximal runs of the sorted ranks within cd.
    sorted_ranks = [ranks[index] for index in order]
    groups, level = [], 0
    for start in range(count):
        end = max(j for j in range(start, count) if sorted_ranks[j] - sorted_ranks[start] < cd)
        if end > start and not any(s <= start and end <= e for s, e in groups):
            groups.append((start, end))
    for start, end in groups:
        level += 1
        axis.plot([sorted_ranks[start] - 0.03, sorted_ranks[end] + 0.03], [-0.25 * level, -0.25 * level], color="black", linewidth=3)
    axis.plot([1, 1 + cd], [1.0, 1.0], color="tab:red", linewidth=2)
    axis.text(1 + cd / 2, 1.15, f"CD {cd:.2f}", ha="center", fontsize=9, color="tab:red")
    axis.set_title(title, fontsize=10)
    axis.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
