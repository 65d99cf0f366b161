"""Fit the linear heads of a frozen-backbone model exactly, on cached features.

With the whole backbone frozen, each head is a linear model on fixed features: a convex
problem with a unique regularized optimum. Gradient training with AdamW on 557 photos and
4896 features overfits within a few epochs (measured on CLIVE: validation SRCC peaked at 0.755
at epoch 4 and fell to 0.70 by epoch 60, where a ridge fit of the same features gave 0.79).
So, after the training loop, `fit_heads` solves each head with an L2 penalty whose strength is
chosen by grouped k-fold cross-validation on the TRAINING features only (the two cached views
of a photo, or all synthetic crops of one reference photo, always share a fold):

- MOS: ridge regression on the head's logit of the MOS (the head outputs
  low + (high - low) * sigmoid over the model's `mos_span`), kernel form;
- classes: multinomial logistic regression (L-BFGS), rows with a class target; with
  `max_false_reject`, also the card's `reject_at`, chosen on out-of-fold probabilities;
- attributes: logistic regression on the severities (soft targets), rows with targets.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from iqs_cli.linfit import group_folds as _folds
from iqs_cli.linfit import lowest_threshold
from iqs_cli.linfit import ridge as _ridge

from .metrics import srcc

DEFAULT_MOS_LAMBDAS = (300.0, 1000.0, 3000.0, 10000.0, 30000.0)
DEFAULT_LOGISTIC_LAMBDAS = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0)


def mos_logit(mos: np.ndarray, span: tuple[float, float] = (0.0, 100.0)) -> np.ndarray:
    """Inverse of the MOS head's output mapping (clipped half a point inside 0-100)."""
    low, high = span
    u = (np.clip(mos, 0.5, 99.5) - low) / (high - low)
    return np.log(u / (1 - u))


def fit_mos(z: np.ndarray, mos: np.ndarray, groups: np.ndarray, lambdas, folds: int,
            seed: int, span: tuple[float, float] = (0.0, 100.0)) -> dict:
    t = mos_logit(mos, span)
    scores = {}
    for lam in lambdas:
        fold_srcc = []
        for val in _folds(groups, folds, seed):
            w, b = _ridge(z[~val], t[~val], lam)
            fold_srcc.append(srcc(z[val] @ w + b, mos[val]))
        scores[lam] = float(np.mean(fold_srcc))
    best = max(scores, key=scores.get)
    w, b = _ridge(z, t, best)
    return {"weight": w, "bias": b, "lambda": best, "cv_srcc": scores}


def _logistic(z: torch.Tensor, target: torch.Tensor, lam: float, multiclass: bool,
              iterations: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    out = int(target.max()) + 1 if multiclass else target.shape[1]
    w = torch.zeros(z.shape[1], out, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(out, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([w, b], max_iter=iterations, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        logits = z @ w + b
        loss = (F.cross_entropy(logits, target) if multiclass
                else F.binary_cross_entropy_with_logits(logits, target))
        loss = loss + lam * (w * w).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach(), b.detach()


def _logistic_cv(z: np.ndarray, target: np.ndarray, groups: np.ndarray, lambdas, folds: int,
                 seed: int, multiclass: bool, num_classes: int = 3) -> dict:
    zt = torch.from_numpy(z).double()
    tt = torch.from_numpy(target).long() if multiclass else torch.from_numpy(target).double()
    scores, oof = {}, {}
    for lam in lambdas:
        losses = []
        # Out-of-fold probabilities (multiclass): what the head says about training rows it
        # did not see, for choosing decision thresholds without touching validation.
        oof[lam] = np.zeros((len(target), num_classes))
        for val in _folds(groups, folds, seed):
            tr, va = torch.from_numpy(~val), torch.from_numpy(val)
            w, b = _logistic(zt[tr], tt[tr], lam, multiclass)
            logits = zt[va] @ w + b
            if multiclass:
                # pad classes a fold never saw, so the loss is defined
                if logits.shape[1] < num_classes:
                    logits = F.pad(logits, (0, num_classes - logits.shape[1]), value=-30.0)
                losses.append(float(F.cross_entropy(logits, tt[va])))
                oof[lam][val] = torch.softmax(logits, 1).numpy()
            else:
                losses.append(float(F.binary_cross_entropy_with_logits(logits, tt[va])))
        scores[lam] = float(np.mean(losses))
    best = min(scores, key=scores.get)
    w, b = _logistic(zt, tt, best, multiclass)
    fit = {"weight": w.numpy(), "bias": b.numpy(), "lambda": best, "cv_loss": scores}
    if multiclass:
        fit["oof"] = oof[best]
    return fit


REJECT_AT_GRID = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.50 .. 0.95


def choose_reject_at(oof: np.ndarray, labels: np.ndarray, max_false_reject: float) -> dict:
    """The lowest P(rejected) threshold at which at most `max_false_reject` of the training rows
    labelled accepted are rejected out of fold (a wrongly rejected keeper costs a photographer
    more than a bad shot left pending), with the share of rejected rows it still catches."""
    accepted, rejected = labels == 2, labels == 0
    chosen = lowest_threshold(oof[accepted, 0], max_false_reject, REJECT_AT_GRID)
    return {"reject_at": chosen,
            "oof_accepted_rejected": round(float((oof[accepted, 0] >= chosen).mean()), 4),
            "oof_rejected_caught": round(float((oof[rejected, 0] >= chosen).mean()), 4)}


@torch.no_grad()
def _normalized(model, pooled: np.ndarray) -> np.ndarray:
    model.eval()
    out = [model.feature_norm(torch.from_numpy(np.asarray(pooled[i:i + 512], np.float32))).numpy()
           for i in range(0, len(pooled), 512)]
    return np.concatenate(out).astype(np.float64)


def synthetic_rows(synth_store, group_size: int, offset: int, options: dict):
    """(groups, mos, labels, attributes) of the synthetic rows as the heads are fit on them:
    groups numbered from `offset`, classes only at options["class_levels"] when given."""
    source = synth_store.targets["source"].numpy()
    if (source >= 0).all():
        # Every crop of one reference photo in one fold: the out-of-fold figures (and the
        # penalties) then speak for photos the heads have not seen, as at run time.
        groups = offset + source
    else:
        groups = offset + np.arange(len(synth_store)) // group_size
    labels = synth_store.targets["label"].numpy().copy()
    if options.get("class_levels") is not None:
        # Mild distortions (level 1-3) next to their reference are a coin toss between
        # "accepted" and "pending"; learning classes only from clean references and
        # severe levels keeps the head from rejecting clean photos it has not seen.
        levels = synth_store.targets["level"].numpy()
        labels[~np.isin(levels, options["class_levels"])] = -1
    return (groups, synth_store.targets["mos"].numpy(), labels,
            synth_store.targets["attributes"].numpy())


def fit_arrays(z: np.ndarray, groups: np.ndarray, mos: np.ndarray, labels: np.ndarray,
               attrs: np.ndarray | None, options: dict, seed: int,
               span: tuple[float, float] = (0.0, 100.0)) -> tuple[dict, dict]:
    """The head fits on normalized features `z` [M, D] (rows of one group share a fold):
    ({"mos" | "classes" | "attributes": fit with "weight" [D, K] and "bias"}, report). A head
    is left out when its rows are too few; attrs None: no attribute head."""
    folds = int(options.get("folds", 5))
    fits, report = {}, {}
    has_mos = np.isfinite(mos)
    if has_mos.sum() >= 2 * folds:
        fit = fit_mos(z[has_mos], mos[has_mos], groups[has_mos],
                      options.get("mos_lambdas", DEFAULT_MOS_LAMBDAS), folds, seed, span)
        fits["mos"] = fit
        report["mos"] = {"lambda": fit["lambda"], "cv_srcc": fit["cv_srcc"], "rows": int(has_mos.sum())}
    has_label = labels >= 0
    if len(np.unique(labels[has_label])) == 3:
        fit = _logistic_cv(z[has_label], labels[has_label], groups[has_label],
                           options.get("class_lambdas", DEFAULT_LOGISTIC_LAMBDAS), folds, seed, True)
        fits["classes"] = fit
        report["classes"] = {"lambda": fit["lambda"], "cv_loss": fit["cv_loss"], "rows": int(has_label.sum())}
        if options.get("max_false_reject") is not None:
            report["classes"].update(choose_reject_at(fit["oof"], labels[has_label],
                                                      float(options["max_false_reject"])))
    if attrs is not None:
        has_attr = np.isfinite(attrs).all(1)
        if has_attr.sum() >= 2 * folds:
            fit = _logistic_cv(z[has_attr], attrs[has_attr].astype(np.float64), groups[has_attr],
                               options.get("attribute_lambdas", DEFAULT_LOGISTIC_LAMBDAS), folds,
                               seed, False)
            fits["attributes"] = fit
            report["attributes"] = {"lambda": fit["lambda"], "cv_loss": fit["cv_loss"],
                                    "rows": int(has_attr.sum())}
    return fits, report


def set_heads(model, fits: dict) -> None:
    """Put the fits of `fit_arrays` into the model's linear heads."""
    if "mos" in fits:
        model.mos_head.weight.data = torch.from_numpy(fits["mos"]["weight"]).float()[None]
        model.mos_head.bias.data = torch.tensor([fits["mos"]["bias"]], dtype=torch.float32)
    if "classes" in fits:
        model.class_head.weight.data = torch.from_numpy(fits["classes"]["weight"].T).float()
        model.class_head.bias.data = torch.from_numpy(fits["classes"]["bias"]).float()
    if "attributes" in fits:
        model.attribute_head.weight.data = torch.from_numpy(fits["attributes"]["weight"].T).float()
        model.attribute_head.bias.data = torch.from_numpy(fits["attributes"]["bias"]).float()


def check_linear_heads(model) -> None:
    if model.split <= len(model.backbone._blocks) or not isinstance(model.neck, torch.nn.Identity):
        raise ValueError("head_fit needs the whole backbone frozen (trainable_blocks 0, "
                         "train_conv_head false) and linear heads (head_hidden 0)")


def fit_heads(model, record_store, views: int, synth_store, group_size: int, options: dict,
              seed: int) -> dict:
    """Replace the heads of `model` (frozen backbone, linear heads) by regularized fits."""
    check_linear_heads(model)
    parts, groups, mos, labels, attrs = [], [], [], [], []
    offset = 0
    if record_store is not None:
        n = len(record_store) // views
        parts.append(record_store.pooled)
        groups.append(np.arange(len(record_store)) % n)
        offset = n
        mos.append(record_store.targets["mos"].numpy())
        labels.append(record_store.targets["label"].numpy())
        attrs.append(record_store.targets["attributes"].numpy())
    if synth_store is not None:
        parts.append(synth_store.pooled)
        for values, part in zip((groups, mos, labels, attrs),
                                synthetic_rows(synth_store, group_size, offset, options)):
            values.append(part)
    z = _normalized(model, np.concatenate(parts))
    groups, mos, labels = np.concatenate(groups), np.concatenate(mos), np.concatenate(labels)
    attrs = np.concatenate(attrs) if model.attribute_head is not None else None
    fits, report = fit_arrays(z, groups, mos, labels, attrs, options, seed, model.mos_span)
    set_heads(model, fits)
    return report
