"""The reward model's score head fitted first, as a linear probe on the frozen base model, then fine-tuned with LoRA:
LP-FT (Kumar et al., "Fine-Tuning can Distort Pretrained Features and Underperform Out-of-Distribution", ICLR 2022).

    python -m core train reward --preset quick --head-init probe

Why it was tried: the reward stage starts its score head at random, and the initial draw alone moved held-out
accuracy by up to 15 points on the same votes (bench/README.md, "Which reward-model settings learn the taste?"); a
linear read-out of the frozen base model's last state already orders about 72 % of the held-out votes right ("Where
the reward model reads a list"). Measured on an `ontopic` loop's votes it did worse: 0.703 and 0.734 held out against
the random head's 0.891 and 0.844 (two seeds), fitting the training votes better (bench/README.md, "The score head
from a probe first (LP-FT)"), so `random` stays the default. Written here because neither TRL nor PEFT initialise a
classification head from data; the fit is a small convex problem solved with torch's L-BFGS.

1. Features: the frozen base model's last hidden state at each training list's last token, which is exactly what the
   score head reads (RewardScorer.features), once per distinct (request, list).
2. Bradley–Terry logistic regression on chosen − rejected feature differences, each feature scaled to unit spread,
   with the pairs' margins and the stage's own penalty on the scores' sum (TRL's center_rewards): minimise
   mean softplus(−(Δx·w − m)) + c·mean((x⁺·w + x⁻·w)²) + λ/2 |w|², the reward stage's loss with the features frozen.
   λ by 5-fold cross-validation grouped by request, the largest within one standard error of the best.
3. The head's weights are w divided by each feature's spread (the Llama score head has no bias), so the untrained
   LoRA model scores every list exactly as the probe does.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

FOLDS = 5
L2_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)


def fit_bt(diff: np.ndarray, margin: np.ndarray, l2: float, sums: np.ndarray | None = None,
           center: float = 0.0) -> np.ndarray:
    """w minimising mean softplus(-(diff·w - margin)) + center·mean((sums·w)²) + l2/2 |w|²: Bradley–Terry with the
    pairs' margins and, given `sums` (each pair's chosen + rejected features), TRL's penalty on the scores' sum."""
    x, m = torch.tensor(diff, dtype=torch.float64), torch.tensor(margin, dtype=torch.float64)
    both = torch.tensor(sums, dtype=torch.float64) if sums is not None and center else None
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimiser.zero_grad()
        loss = torch.nn.functional.softplus(-(x @ w - m)).mean() + l2 / 2 * (w @ w)
        if both is not None:
            loss = loss + center * ((both @ w) ** 2).mean()
        loss.backward()
        return loss
    optimiser.step(closure)
    return w.detach().numpy()


def folds(groups: pd.Series, k: int = FOLDS) -> np.ndarray:
    """A fold per row, whole requests at a time (a request in two folds would leak)."""
    unique = np.array(sorted(groups.unique()))
    rng = np.random.default_rng(0)
    fold_of = dict(zip(rng.permutation(unique), np.arange(len(unique)) % k))
    return groups.map(fold_of).to_numpy()


def fold_accuracies(diff: np.ndarray, margin: np.ndarray, groups: pd.Series, sums: np.ndarray | None = None,
                    center: float = 0.0) -> dict[float, list[float]]:
    """Per λ in L2_GRID: for each fold, the share of its pairs a probe fitted on the other folds orders right."""
    fold = folds(groups, min(FOLDS, groups.nunique()))
    return {l2: [float((diff[fold == f] @ fit_bt(diff[fold != f], margin[fold != f], l2,
                                                 None if sums is None else sums[fold != f], center) > 0).mean())
                 for f in np.unique(fold)]
            for l2 in L2_GRID}


def one_standard_error_l2(by_l2: dict[float, list[float]]) -> float:
    """The largest λ whose mean fold accuracy is within one standard error of the best λ's (Hastie, Tibshirani and
    Friedman, The Elements of Statistical Learning, 7.10): a few hundred pairs in 576 dimensions are nearly separable,
    so accuracy is flat over small λ while the weights, and the scores LoRA then starts from, grow without bound."""
    means = {l2: float(np.mean(accs)) for l2, accs in by_l2.items()}
    best = max(means, key=means.get)
    floor = means[best] - float(np.std(by_l2[best]) / np.sqrt(len(by_l2[best])))
    return max(l2 for l2, mean in means.items() if mean >= floor)


def probe_head(features: np.ndarray, chosen: np.ndarray, rejected: np.ndarray, margin: np.ndarray,
               groups: pd.Series, center: float = 0.0) -> tuple[np.ndarray, dict]:
    """The score head's weights (hidden,) from a Bradley–Terry probe, and what the fit found.

    features: (N, hidden) one row per distinct list; chosen, rejected: (P,) row indices into it for each training
    pair; margin: (P,); groups: (P,) the request of each pair (folds keep a request whole); center: the stage's
    penalty on the scores' sum, so the head starts where TRL's loss with the frozen features is least."""
    spread = features.std(0) + 1e-6  # (hidden,)
    x = features / spread  # unit spread per feature; not centred, since the head has no bias to absorb a centre
    diff, sums = x[chosen] - x[rejected], x[chosen] + x[rejected]  # (P, hidden) each
    if groups.nunique() >= 2:
        by_l2 = fold_accuracies(diff, margin, groups, sums, center)
        l2 = one_standard_error_l2(by_l2)
    else:  # one request: nothing to cross-validate over; the grid's middle
        by_l2, l2 = {}, L2_GRID[len(L2_GRID) // 2]
    w = fit_bt(diff, margin, l2, sums, center)
    scores = x @ w  # (N,)
    return w / spread, {"probe/l2": l2, "probe/cv_accuracy": float(np.mean(by_l2[l2])) if by_l2 else None,
                        "probe/train_accuracy": float(np.mean(diff @ w > 0)),
                        "probe/mean_score": float(scores.mean()), "probe/score_std": float(scores.std())}


def init_head_from_probe(model, scorer, pairs: pd.DataFrame, use_margin: bool, swap_labels: bool,
                         center: float = 0.0) -> dict:
    """Step 1-3 on a reward model before LoRA wraps it: its `score` head set to the probe fitted on `pairs` (the
    training pairs: prompt, chosen, rejected, margin) with `scorer` reading the same model's features. Returns the
    fit's metrics."""
    texts = pd.unique(pd.Series(list(zip(pairs.prompt, pairs.chosen)) + list(zip(pairs.prompt, pairs.rejected))))
    index = {key: i for i, key in enumerate(texts)}
    features = scorer.features([p for p, _ in texts], [t for _, t in texts])  # (N, hidden)
    chosen = np.array([index[key] for key in zip(pairs.prompt, pairs.chosen)])
    rejected = np.array([index[key] for key in zip(pairs.prompt, pairs.rejected)])
    if swap_labels:
        chosen, rejected = rejected, chosen
    margin = pairs.margin.to_numpy(float) if use_margin else np.zeros(len(pairs))
    weights, found = probe_head(features, chosen, rejected, margin, pairs.prompt.reset_index(drop=True), center)
    with torch.no_grad():
        model.score.weight.copy_(torch.as_tensor(weights).reshape(model.score.weight.shape))
    return found
