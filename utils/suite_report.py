"""report.md of a suite: per-setting means over seeds, paired comparisons with the baseline, the
Friedman test and a critical-difference diagram, naive baselines and published values.

Every test figure is the one test of the checkpoint each run chose on its validation loss; the
best validation loss is listed beside it, and nothing here is chosen by test.
"""
import os
from collections import defaultdict

import numpy as np
import yaml

from utils.repeats import mean_and_std
from utils.statistics import critical_difference, friedman, paired_comparison, plot_critical_difference

PUBLISHED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "published.yaml")


def load_published(path: str = PUBLISHED) -> list[dict]:
    """Entries {match: {config key: value}, mse, mae, source}."""
    with open(path) as handle:
        entries = yaml.safe_load(handle) or []
    for entry in entries:
        missing = {"match", "mse", "mae", "source"} - set(entry)
        if missing:
            raise ValueError(f"{path}: an entry lacks {sorted(missing)}: {entry}")
    return entries


def _format(statistics: dict) -> str:
    return f"{statistics['mean']:.4f} ± {statistics['std']:.4f}"


def _cell_name(cell: dict) -> str:
    return ", ".join(f"{name}={value}" for name, value in cell.items()) or "all runs"


def write_report(plan, runs: list, rows: list[dict], output: str) -> str:
    """rows: result rows of `runs`, in the same order. Returns the report's path."""
    by_key = {row["key"]: row for row in rows}
    ok = [run for run in runs if by_key[run.key]["status"] == "ok"]
    lines = [
        f"# Suite report: {plan.path}", "",
        f"{len(ok)} of {len(runs)} runs finished ({sum(by_key[r.key]['status'] == 'failed' for r in runs)} failed). "
        f"Settings: {', '.join(plan.setting_names)}; baseline {plan.baseline}; seeds {plan.seeds}. Each test figure is the single "
        "test of the checkpoint its run chose on validation; compare settings on validation, report test.", "",
    ]
    cells = []
    for run in runs:
        if run.cell not in cells:
            cells.append(run.cell)
    values = defaultdict(dict)  # (cell name, setting) -> seed -> row
    for run in ok:
        values[(_cell_name(run.cell), run.setting)][run.seed] = by_key[run.key]
    for cell in cells:
        name = _cell_name(cell)
        lines += [f"## {name}", "", "| setting | seeds | best val loss | test MSE | test MAE | trainable parameters | train time s |", "|---|---|---|---|---|---|---|"]
        naive = defaultdict(list)
        for setting in plan.setting_names:
            seeded = values.get((name, setting), {})
            if not seeded:
                lines.append(f"| {setting} | 0 | | | | | |")
                continue
            column = {metric: mean_and_std([row[metric] for row in seeded.values()]) for metric in ("best_val_loss", "test_mse", "test_mae", "train_time_s")}
            parameters = next(iter(seeded.values()))["trainable_parameters"]
            lines.append(f"| {setting} | {len(seeded)} | {_format(column['best_val_loss'])} | {_format(column['test_mse'])} | "
                         f"{_format(column['test_mae'])} | {parameters:,} | {column['train_time_s']['mean']:.1f} |")
            for row in seeded.values():
                for metric in ("last_value_mse", "last_value_mae", "seasonal_naive_mse", "seasonal_naive_mae"):
                    if row.get(metric) is not None:
                        naive[metric].append(row[metric])
        for label, prefix in (("repeat last value", "last_value"), ("seasonal naive", "seasonal_naive")):
            if naive[f"{prefix}_mse"]:
                lines.append(f"| *{label}* | | | {np.mean(naive[prefix + '_mse']):.4f} | {np.mean(naive[prefix + '_mae']):.4f} | 0 | |")
        lines += ["", *_paired_section(plan, name, values), *_published_section(plan, name, runs, values), ""]
    lines += _ranking_section(plan, cells, values, output)
    path = os.path.join(output, "report.md")
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def _paired_section(plan, cell: str, values: dict) -> list[str]:
    baseline = values.get((cell, plan.baseline), {})
    lines = [f"Against {plan.baseline}, paired by seed (difference = setting - baseline; negative is better; "
             "95 % percentile bootstrap of the mean difference, 10,000 resamples; Wilcoxon signed-rank, whose smallest "
             "two-sided p with n pairs is 2 / 2^n, 0.25 for 3 seeds: more blocks, not more digits, make a difference significant):", "",
             "| setting | metric | pairs | mean difference | 95 % interval | Wilcoxon p | wins / ties / losses |", "|---|---|---|---|---|---|---|"]
    for setting in plan.setting_names:
        if setting == plan.baseline:
            continue
        seeded = values.get((cell, setting), {})
        seeds = sorted(set(seeded) & set(baseline))
        if not seeds:
            continue
        for metric in ("test_mse", "test_mae"):
            result = paired_comparison([seeded[s][metric] for s in seeds], [baseline[s][metric] for s in seeds])
            low, high = result["interval"]
            lines.append(f"| {setting} | {metric.removeprefix('test_').upper()} | {result['n']} | {result['mean_difference']:+.4f} | "
                         f"[{low:+.4f}, {high:+.4f}] | {result['wilcoxon_p']:.3f} | {result['wins']} / {result['ties']} / {result['losses']} |")
    return lines + [""]


def _published_section(plan, cell: str, runs: list, values: dict) -> list[str]:
    lines = []
    entries = load_published()
    for setting in plan.setting_names:
        config = next((run.config for run in runs if _cell_name(run.cell) == cell and run.setting == setting), None)
        seeded = values.get((cell, setting), {})
        if config is None or not seeded:
            continue
        for entry in entries:
            if all(config.get(key) == value for key, value in entry["match"].items()):
                measured = mean_and_std([row["test_mse"] for row in seeded.values()])
                lines.append(f"| {setting} | {entry['mse']:.3f} / {entry['mae']:.3f} | {_format(measured)} | {measured['mean'] - entry['mse']:+.4f} | {entry['source']} |")
    if not lines:
        return ["Published values: none in configs/published.yaml matches these settings (model, data, features, seq_len, pred_len).", ""]
    return ["| setting | published MSE / MAE | measured MSE | difference | source |", "|---|---|---|---|---|", *lines, ""]


def _ranking_section(plan, cells: list, values: dict, output: str) -> list[str]:
    """Friedman test and CD diagram over blocks (cell, seed) in which every setting finished."""
    names = plan.setting_names
    if len(names) < 3:
        return []
    blocks = []
    for cell in cells:
        name = _cell_name(cell)
        for seed in plan.seeds:
            rows = [values.get((name, setting), {}).get(seed) for setting in names]
            if all(row is not None for row in rows):
                blocks.append([row["test_mse"] for row in rows])
    if len(blocks) < 2:
        return ["## Ranking", "", f"Fewer than 2 complete blocks ({len(blocks)}): no Friedman test.", ""]
    table = np.array(blocks)
    result = friedman(table)
    cd = critical_difference(len(names), len(blocks))
    plot_critical_difference(names, result["average_ranks"], cd, os.path.join(output, "critical_difference.png"),
                             f"test MSE ranks over {len(blocks)} blocks (dataset x horizon x seed), Nemenyi CD at 0.05")
    ranks = ", ".join(f"{name} {rank:.2f}" for name, rank in sorted(zip(names, result["average_ranks"]), key=lambda item: item[1]))
    return ["## Ranking across blocks", "",
            f"Friedman test over {len(blocks)} blocks (each dataset x horizon x seed where every setting finished), test MSE: "
            f"chi2 {result['statistic']:.2f}, p {result['p_value']:.4f}. Average ranks (1 is best): {ranks}. "
            f"Nemenyi critical difference at 0.05: {cd:.2f}.", "", "![critical difference](critical_difference.png)", ""]
