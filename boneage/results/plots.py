"""The report's figures: variants compared, predicted against reference, Bland-Altman, error by age,
training curves, stage confusion. Each takes what the evaluation wrote and saves one PNG.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .figures import grid, pyplot, save
from .metrics import STAGES


def _test(pred: pd.DataFrame) -> pd.DataFrame:
    return pred[pred["subset"] == "test"]



def fig_comparison(metrics, out):
    plt = pyplot()
    names = list(metrics)
    fig, ax = plt.subplots(figsize=(max(4.5, 1.1 * len(names) + 2), 3.4))
    test = [metrics[n]["test"]["mae"] for n in names]
    val = [metrics[n]["val"]["mae"] for n in names]
    x = np.arange(len(names))
    ax.bar(x - 0.2, val, 0.4, label="validation", color="#9ecae1")
    ax.bar(x + 0.2, test, 0.4, label="test", color="#3182bd")
    base = next(iter(metrics.values()))["test"]["baseline_mae"]
    ax.axhline(base, color="#d62728", ls="--", lw=1, label=f"predict training mean ({base:.1f})")
    for xi, v in zip(x, test):
        ax.text(xi + 0.2, v, f"{v:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylabel("mean absolute error (months)")
    ax.set_title("Variants compared (lower is better)")
    ax.legend(fontsize=7)
    return save(fig, out)



def fig_pred_vs_true(preds, metrics, out):
    fig, axes = grid(len(preds))
    for ax, (name, p) in zip(axes, preds.items()):
        t = _test(p)
        for male, color, label in ((False, "#e377c2", "girls"), (True, "#1f77b4", "boys")):
            s = t[t["male"] == male]
            ax.scatter(s["boneage"], s["pred"], s=8, alpha=0.6, color=color, label=label)
        ax.plot([0, 240], [0, 240], color="k", lw=0.8, label="identity")
        ax.set(xlim=(0, 240), ylim=(0, 240), xlabel="reference bone age (months)",
               ylabel="predicted bone age (months)",
               title=f"{name}\nMAE {metrics[name]['test']['mae']:.1f}, R² {metrics[name]['test']['r2']:.3f}")
        ax.legend(fontsize=7, loc="upper left")
    return save(fig, out)



def fig_bland_altman(preds, out):
    fig, axes = grid(len(preds))
    for ax, (name, p) in zip(axes, preds.items()):
        t = _test(p)
        mean = (t["pred"] + t["boneage"]) / 2
        diff = t["pred"] - t["boneage"]
        bias, sd = diff.mean(), diff.std()
        ax.scatter(mean, diff, s=8, alpha=0.6, color="#555555")
        ax.axhline(bias, color="#d62728", lw=1, label=f"bias {bias:+.1f}")
        for k in (-1.96, 1.96):
            ax.axhline(bias + k * sd, color="#d62728", lw=0.8, ls="--")
        ax.set(xlabel="mean of predicted and reference (months)",
               ylabel="predicted − reference (months)",
               title=f"{name}\nlimits of agreement ±{1.96 * sd:.1f}")
        ax.legend(fontsize=7)
    return save(fig, out)



def fig_error_by_age(preds, bin_months, out):
    fig, axes = grid(len(preds), width=4.2)
    for ax, (name, p) in zip(axes, preds.items()):
        t = _test(p).assign(err=lambda d: (d["pred"] - d["boneage"]).abs(),
                            age_bin=lambda d: (np.floor(d["boneage"] / bin_months) * bin_months).astype(int))
        bins = sorted(t["age_bin"].unique())
        for offset, male, color in ((-0.2, False, "#e377c2"), (0.2, True, "#1f77b4")):
            data = [t[(t["age_bin"] == b) & (t["male"] == male)]["err"].to_numpy() for b in bins]
            pos = [i + offset for i, d in enumerate(data) if len(d)]
            data = [d for d in data if len(d)]
            if data:
                bp = ax.boxplot(data, positions=pos, widths=0.35, patch_artist=True, showfliers=False)
                for box in bp["boxes"]:
                    box.set_facecolor(color)
                    box.set_alpha(0.6)
        ax.set_xticks(range(len(bins)), [f"{b}-{b + int(bin_months)}" for b in bins], rotation=45, fontsize=7)
        ax.set(xlabel="reference bone age bin (months)", ylabel="absolute error (months)",
               title=f"{name} (pink: girls, blue: boys)")
    return save(fig, out)



def fig_training(histories, out):
    plt = pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    for name, h in histories.items():
        a1.plot(h["epoch"], h["train_loss"], label=name)
        a2.plot(h["epoch"], h["val_mae"], label=name)
    a1.set(xlabel="epoch", ylabel="training loss", title="Training loss")
    a2.set(xlabel="epoch", ylabel="validation MAE (months)", title="Validation MAE per epoch")
    a2.set_ylim(0, max(1.0, np.nanpercentile(np.concatenate([h["val_mae"].to_numpy() for h in histories.values()]), 95) * 1.2))
    a1.set_yscale("log")
    a2.legend(fontsize=7)
    return save(fig, out)



def fig_confusion(metrics, thresholds, out):
    fig, axes = grid(len(metrics), width=3.2, height=3.0)
    for ax, (name, m) in zip(axes, metrics.items()):
        cm = np.array(m["test"]["stage"]["confusion"])
        ax.imshow(cm, cmap="Blues")
        for i in range(3):
            for j in range(3):
                ax.text(j, i, int(cm[i, j]), ha="center", va="center",
                        color="white" if cm[i, j] > cm.max() / 2 else "black")
        ax.set_xticks(range(3), STAGES)
        ax.set_yticks(range(3), STAGES)
        ax.grid(False)
        ax.set(xlabel="predicted stage", ylabel="reference stage",
               title=f"{name}: accuracy {m['test']['stage']['accuracy']:.2f}")
    fig.suptitle(f"Stages: child < {thresholds[0]:g} ≤ adolescent < {thresholds[1]:g} ≤ adult (months)", fontsize=8)
    return save(fig, out)



# name of each figure file (results/report/figures/<name>.png; the report rule declares the same names)
FIGURES = {
    "variant_comparison": lambda d: fig_comparison(d["metrics"], d["out"]),
    "pred_vs_true": lambda d: fig_pred_vs_true(d["preds"], d["metrics"], d["out"]),
    "bland_altman": lambda d: fig_bland_altman(d["preds"], d["out"]),
    "error_by_age": lambda d: fig_error_by_age(d["preds"], d["bin_months"], d["out"]),
    "training_curves": lambda d: fig_training(d["histories"], d["out"]),
    "confusion": lambda d: fig_confusion(d["metrics"], d["thresholds"], d["out"]),
}
