"""Turns evaluation figures into the verdict table and the plots.

Why separate: the verdicts (target, measured, met or not) are the part a
data-protection officer reads; keeping the thresholds in one visible place,
next to their wording, makes it plain that they are not adjusted to the
results.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.privacy.evaluation.run import EvalResult

__all__ = ["Row", "verdict_rows", "write_plots", "write_json"]

# Targets (issue 3). "Roughly equal" filling is made concrete here: on a sample of
# 100 occurrences per group, every group between 1/3 and 3 times the mean.
SAME_GROUP_TARGET = (0.45, 0.55)
K_TARGET_SHARE = 0.99
MAX_POSTERIOR = 1 / 3
MAX_ATTRIBUTE_ADVANTAGE = 0.01
FILL_BOUNDS = (1 / 3, 3.0)


@dataclass(frozen=True)
class Row:
    measure: str
    target: str
    measured: str
    verdict: str  # "met", "UNMET", or "info"


def _v(ok: bool) -> str:
    return "met" if ok else "UNMET"


def verdict_rows(res: EvalResult) -> list[Row]:
    f = res.figures
    sg, fi, k, li, at = f["same_group"], f["filling"], f["k"], f["linkage"], f["attributes"]
    co, fl, vec, de = f["counts"], f["flows"], f["vector"], f["demographics"]
    rows = [
        Row("same-group rate, re-capture at another camera", "0.50 ± 0.05",
            f"{sg['rate']:.3f} [95% CI {sg['ci95'][0]:.3f}-{sg['ci95'][1]:.3f}], {sg['pairs']} pairs; "
            f"calibrated p {sg['calibrated_p']:.3f}; different people {sg['different_person_rate']:.4f}",
            _v(SAME_GROUP_TARGET[0] <= sg["rate"] <= SAME_GROUP_TARGET[1])),
        Row("group filling (100 per group on average)", "each group 1/3x-3x the mean",
            f"min {fi['min_over_mean']:.2f}x, max {fi['max_over_mean']:.2f}x; excess CV {fi['excess_cv']:.2f} "
            f"(CV {fi['cv']:.2f}, Poisson {fi['poisson_cv']:.2f})",
            _v(FILL_BOUNDS[0] <= fi["min_over_mean"] and fi["max_over_mean"] <= FILL_BOUNDS[1])),
        Row("effective anonymity set k of each real occurrence", ">= 3 for >= 99%",
            f"{100 * k['share_k3']:.1f}% (median count {k['median_cell_count']:.0f}); without the floor "
            f"{100 * k['share_k3_without_floor']:.1f}%, without fictitious persons "
            f"{100 * k['share_k3_without_fictitious']:.1f}%",
            _v(k["share_k3"] >= K_TARGET_SHARE)),
        Row(f"linkage attack: posterior 'target at X in t' (prior {li['prior']:.2f})", "<= 1/3",
            f"max {li['posterior_max']:.3f}, p99 {li['posterior_p99']:.3f}, mean present "
            f"{li['posterior_mean_present']:.3f} / absent {li['posterior_mean_absent']:.3f}; "
            f"advantage {li['advantage']:.2f}, AUC {li['auc']:.2f}; LR bound {li['bound_lr']:.2f}",
            _v(li["posterior_max"] <= MAX_POSTERIOR + 1e-9)),
        Row("  same attack without fictitious persons", "(comparison)",
            f"p99 {li['without_fictitious']['posterior_p99']:.3f}, median "
            f"{li['without_fictitious']['posterior_median']:.3f}; advantage "
            f"{li['without_fictitious']['advantage']:.2f}, AUC {li['without_fictitious']['auc']:.2f}", "info"),
        Row("  same attack with a 50% prior", "(stress)",
            f"max posterior {li['posterior_max_prior_half']:.3f} (bound {li['bound_lr'] / (1 + li['bound_lr']):.3f})",
            "info"),
        Row("attribute inference from group id: gender", "<= +1.0 pp over majority",
            f"{100 * at['gender']['advantage']:+.1f} pp ({100 * at['gender']['accuracy']:.1f}% vs "
            f"{100 * at['gender']['baseline']:.1f}%); the clean descriptor itself gives "
            f"{100 * at['descriptor_gender_accuracy']:.1f}%",
            _v(at["gender"]["advantage"] <= MAX_ATTRIBUTE_ADVANTAGE)),
        Row("attribute inference from group id: age band", "<= +1.0 pp over majority",
            f"{100 * at['age_band']['advantage']:+.1f} pp ({100 * at['age_band']['accuracy']:.1f}% vs "
            f"{100 * at['age_band']['baseline']:.1f}%)",
            _v(at["age_band"]["advantage"] <= MAX_ATTRIBUTE_ADVANTAGE)),
        Row("utility: per-camera count, one window", "(report)",
            f"RMSE {co['window_rmse']:.1f} people (theory {co['window_sd_expected']:.1f}) vs "
            f"{co['window_mean_real']:.0f} real on average; noise adds 0", "info"),
        Row("utility: per-camera count, one day", "(report)",
            f"median relative error {100 * co['day_rel_err_median']:.1f}% of "
            f"{co['day_real_per_camera']:.0f} people", "info"),
        Row("utility: flow A->B per day (pairs with >= 50 people)", "(report)",
            f"median relative error {100 * fl['published']['median_rel_err']:.0f}% "
            f"(without fictitious persons {100 * fl['without_fictitious']['median_rel_err']:.0f}%), "
            f"{fl['published']['pairs']} camera pairs", "info"),
        Row("transient noisy vector: nearest clear photo in its crowd", "seed: <= 1/3",
            f"top-1 {100 * vec['top1_accuracy']:.1f}% (median crowd {vec['median_crowd']:.0f}); never leaves the "
            "processor", _v(vec["top1_accuracy"] <= 1 / 3)),
        Row("demographic cells published exactly / pooled / suppressed", "(report)",
            f"{100 * de['exact_share']:.1f}% / {100 * de['pooled_share']:.1f}% / {100 * de['suppressed_share']:.1f}%",
            "info"),
    ]
    return rows


def write_json(res: EvalResult, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "figures.json"
    payload = {"params_version": res.params.version, "params": {
        k: v for k, v in res.params.to_json_dict().items()
        if k not in ("reference", "hash_offsets", "stratum_offsets", "codebook")}, "figures": res.figures}
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n", encoding="utf-8")
    return path


def write_plots(res: EvalResult, out: Path) -> list[Path]:
    """Six plots, one question each. Uses the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    a, f = res.arrays, res.figures
    paths: list[Path] = []

    def save(fig: Any, name: str) -> None:
        p = out / name
        fig.tight_layout()
        fig.savefig(p, dpi=110)
        plt.close(fig)
        paths.append(p)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    c = a["filling_counts"]
    ax.hist(c, bins=40, color="tab:blue")
    ax.axvline(c.mean(), color="k", ls="--", label="mean")
    ax.set(title="Occurrences per group (independent sample)", xlabel="occurrences", ylabel="groups")
    ax.legend()
    save(fig, "group_filling.png")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(0, max(2.2, float(np.max(a["lr_present"])) * 1.05), 45)
    ax.hist(a["lr_absent"], bins=bins, alpha=0.6, label="target absent")
    ax.hist(a["lr_present"], bins=bins, alpha=0.6, label="target present")
    ax.axvline(f["linkage"]["bound_lr"], color="r", ls="--", label="guaranteed bound")
    ax.set(title="Linkage attack: likelihood ratio per test", xlabel="likelihood ratio present/absent",
           ylabel="tests")
    ax.legend()
    save(fig, "linkage_lr.png")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    share = a["female_share_per_group"]
    n = f["filling"]["per_group_mean"]
    ax.hist(share, bins=40, alpha=0.7, label="groups (simulation)")
    rng = np.random.default_rng(0)
    ax.hist(rng.binomial(int(n), 0.5, size=share.size) / n, bins=40, histtype="step", color="k",
            label="if group said nothing about gender")
    ax.set(title="Share of women per group", xlabel="share", ylabel="groups")
    ax.legend()
    save(fig, "attribute_share.png")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(a["count_errors"], bins=40, color="tab:green")
    ax.set(title="Per-camera count error, one window", xlabel="estimated - true people", ylabel="windows")
    save(fig, "count_error.png")

    fig, ax = plt.subplots(figsize=(5, 4.5))
    t = a["flow_truth"]
    ax.scatter(t, a["flow_est_published"], label="published (with fictitious)", s=14)
    ax.scatter(t, a["flow_est_without_fictitious"], label="without fictitious", s=14, marker="x")
    lim = [0, max(t.max(), 1) * 1.1]
    ax.plot(lim, lim, "k--", lw=1)
    ax.set(title="Flows A->B over one day", xlabel="true people", ylabel="estimated people")
    ax.legend()
    save(fig, "flows.png")

    if "tradeoff" in f:
        tr = f["tradeoff"]
        fig, ax1 = plt.subplots(figsize=(6, 3.8))
        ax1.plot(tr["ratio"], [100 * v for v in tr["flow_median_rel_err"]], "o-", label="flow error (median, %)")
        ax1.set(xlabel="fictitious ratio r", ylabel="daily flow error, %")
        ax2 = ax1.twinx()
        ax2.plot(tr["ratio"], tr["posterior_bound"], "s--", color="tab:red", label="posterior bound (prior 0.2)")
        ax2.set_ylabel("worst-case posterior")
        ax1.set_title("Privacy/utility trade-off of fictitious persons")
        save(fig, "tradeoff.png")
    return paths
