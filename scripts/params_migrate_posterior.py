"""The original pipeline's posterior stage (cINN) migrated onto today's ``infer:`` section.

The original trained a conditional INN (FrEIA GLOW coupling blocks, PyTorch) with the keys
of ``train_cinn``, the cINN part of ``model`` and ``losses``, drew ``sample_posterior``
samples and ran ``peak_detection`` on them. Today's posterior stage
(``python -m scripts.infer``) is a conditional masked autoregressive flow; README 'infer'
maps the cINN's keys onto its own, and :func:`migrate_posterior` follows that mapping.
Values are converted where the two differ in meaning (layer counts into widths lists,
torch's plateau patience into today's); keys without a counterpart (the cINN ensemble,
dropout and batch norm of the subnets, image augmentation, absolute peak heights) are
reported with the reason. It works on a ``_Migrator`` of :mod:`scripts.params_migrate`
through its ``put``/``add``/``drop``/``decide``/``drop_or_decide``/``adam_betas``
helpers.
"""
from __future__ import annotations

from typing import Any

#: sections whose presence means the original file configured the posterior stage
POSTERIOR_SECTIONS = ("train_cinn", "sample_posterior", "peak_detection")
#: cINN keys of the original ``model:`` section
CINN_MODEL_KEYS = ("CLAMP", "NUM_COUPLING_LAYERS", "NUM_COND_NODES", "NUM_HIDDEN_NODES",
                   "NUM_HIDDEN_LAYERS", "DROPOUT", "BATCH_NORM", "NUM_HIDDEN_NODES_COND",
                   "NUM_HIDDEN_LAYERS_COND", "DROPOUT_COND", "BATCH_NORM_COND")
#: the supervised MLP baseline's keys of ``model:`` (the original's train_mlp)
MLP_MODEL_KEYS = ("NUM_HIDDEN_NODES_MLP", "NUM_HIDDEN_LAYERS_MLP", "DROPOUT_MLP", "BATCH_NORM_MLP")
#: cINN loss weights of the original ``losses:`` (the flow is fitted by likelihood only)
CINN_LOSS_KEYS = ("lambd_max_likelihood", "lambd_mmd_forw", "lambd_mmd_back", "lambd_mae",
                  "lambd_mse")
#: train_cinn keys copied as they are: original → infer key
SAME_MEANING = {"LEARNING_RATE": "LEARNING_RATE", "NUM_EPOCHS": "EPOCHS", "PATIENCE": "PATIENCE",
                "BATCH_SIZE": "BATCH_SIZE"}


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int | None:
    number = _number(value)
    return int(number) if number is not None and number == int(number) else None


def _put(m, old: str, key: str, value: Any, comment: str = "") -> None:
    """Map ``old`` onto ``infer.key``, or ask for a decision when its value is not a number."""
    if value is None:
        m.decide(old, f"not a number; infer.{key} keeps its default", m.get(*old.split(".", 1)))
    else:
        m.put(old, "infer", key, value, comment)


def has_posterior(raw: dict) -> bool:
    """True when the original file configured the posterior stage at all."""
    model = raw.get("model") or {}
    return any(raw.get(s) for s in POSTERIOR_SECTIONS) or any(k in model for k in CINN_MODEL_KEYS)


def migrate_posterior(m) -> None:
    """Fill ``m.new['infer']`` from the original posterior keys and note every one of them."""
    if not has_posterior(m.raw):
        return
    m.new.setdefault("infer", {})
    _train_cinn(m)
    _model(m)
    _losses(m)
    _sample_posterior(m)
    _peak_detection(m)
    _sets(m)


def _train_cinn(m) -> None:
    tc = m.raw.get("train_cinn") or {}
    for old, new in SAME_MEANING.items():
        if old in tc:
            _put(m, f"train_cinn.{old}", new, _number(tc[old]) if new == "LEARNING_RATE"
                 else _int(tc[old]))
    if "LR_DECAY" in tc:
        _put(m, "train_cinn.LR_DECAY", "LR_DECAY_FACTOR", _number(tc["LR_DECAY"]),
              "factor on a validation plateau, as torch's ReduceLROnPlateau")
    if "LR_PATIENCE" in tc:
        patience = _int(tc["LR_PATIENCE"])
        _put(m, "train_cinn.LR_PATIENCE", "LR_DECAY_PATIENCE",
              None if patience is None else patience + 1,
              "torch decays after PATIENCE+1 epochs without improvement, infer after "
              "LR_DECAY_PATIENCE")
    if "L2_DECAY" in tc:
        _put(m, "train_cinn.L2_DECAY", "WEIGHT_DECAY", _number(tc["L2_DECAY"]),
              "check: decoupled (AdamW) here; the original's torch Adam added it to the gradient")
    m.adam_betas("train_cinn", "the flow (tf_keras' Adam)")
    if "NUM_MODELS" in tc:
        m.drop_or_decide("train_cinn.NUM_MODELS", tc["NUM_MODELS"], _int(tc["NUM_MODELS"]) == 1,
                         "1: one flow per run, as here",
                         f"{tc['NUM_MODELS']}: no ensemble of flows; run infer once per "
                         "infer.SEED (and RUN_NAME) to build one")
    for key in ("USE_PRETRAINED_RESNET", "FIX_RESNET_PARAMS"):
        if key in tc:
            m.drop_or_decide(f"train_cinn.{key}", tc[key], bool(tc[key]),
                             f"{tc[key]}: the flow is conditioned on the trained encoder's fixed "
                             "representation (analyse's embeddings), as here",
                             f"{tc[key]}: no counterpart (the encoder is never trained or "
                             "fine-tuned with the flow)")
    if "RESNET_LR_THRESHOLD" in tc:
        m.drop("train_cinn.RESNET_LR_THRESHOLD", f"{tc['RESNET_LR_THRESHOLD']}: unused by the "
               "original (its unfreezing was commented out); the encoder stays fixed")
    if "NOISE" in tc:
        m.drop_or_decide("train_cinn.NOISE", tc["NOISE"], _number(tc["NOISE"]) == 0,
                         "0: no noise on the targets, as here",
                         f"{tc['NOISE']}: no noise on the targets (UNOBSERVABLES); "
                         "infer.CONDITION_NOISE adds noise to the conditions instead")
    if "AUGMENTATION_PARAMS" in tc:
        m.decide("train_cinn.AUGMENTATION_PARAMS", "no augmentation in the posterior stage: the "
                 "flow learns from one representation per image; infer.CONDITION_NOISE "
                 "regularises instead", tc["AUGMENTATION_PARAMS"])
    for key, value in tc.items():
        if f"train_cinn.{key}" not in m.done:
            m.decide(f"train_cinn.{key}", f"{value}: no counterpart in infer:", value)


def _model(m) -> None:
    model = m.raw.get("model") or {}

    def widths(nodes: str, layers: str, what: str) -> list[int] | None:
        """The original built Linear(in, N), then LAYERS more N→N layers: LAYERS + 1 widths."""
        present = [k for k in (nodes, layers) if k in model]
        if not present:
            return None
        n, k = _int(model.get(nodes)), _int(model.get(layers))
        if n is None or k is None:
            for key in present:
                m.decide(f"model.{key}", f"{model[key]}: {what} needs both {nodes} and {layers}",
                         model[key])
            return None
        return [n] * (k + 1)

    hidden = widths("NUM_HIDDEN_NODES", "NUM_HIDDEN_LAYERS", "infer.HIDDEN_UNITS")
    if hidden is not None:
        for key in ("NUM_HIDDEN_NODES", "NUM_HIDDEN_LAYERS"):
            m.put(f"model.{key}", "infer", "HIDDEN_UNITS", hidden, "subnet widths: NODES × "
                  "(LAYERS + 1), the original's input layer included")
    cond = widths("NUM_HIDDEN_NODES_COND", "NUM_HIDDEN_LAYERS_COND", "infer.CONDITION_EMBEDDING")
    out = _int(model.get("NUM_COND_NODES"))
    if cond is not None and out is not None:
        for key in ("NUM_HIDDEN_NODES_COND", "NUM_HIDDEN_LAYERS_COND", "NUM_COND_NODES"):
            m.put(f"model.{key}", "infer", "CONDITION_EMBEDDING", cond + [out], "conditioning "
                  "network: NODES_COND × (LAYERS_COND + 1), then the NUM_COND_NODES embedding")
    else:
        for key in ("NUM_HIDDEN_NODES_COND", "NUM_HIDDEN_LAYERS_COND", "NUM_COND_NODES"):
            if key in model and f"model.{key}" not in m.done:
                m.decide(f"model.{key}", f"{model[key]}: infer.CONDITION_EMBEDDING needs "
                         "NUM_HIDDEN_NODES_COND, NUM_HIDDEN_LAYERS_COND and NUM_COND_NODES", model[key])
    if "NUM_COUPLING_LAYERS" in model:
        _put(m, "model.NUM_COUPLING_LAYERS", "NUM_COUPLING_LAYERS",
              _int(model["NUM_COUPLING_LAYERS"]), "MAF layers, each followed by a permutation")
    if "CLAMP" in model:
        _put(m, "model.CLAMP", "CLAMP", _number(model["CLAMP"]), "soft clamp "
              "CLAMP·tanh(s/CLAMP) instead of GLOW's CLAMP·0.636·atan(s/CLAMP)")
    for key, what in (("DROPOUT", "dropout"), ("DROPOUT_COND", "dropout"),
                      ("BATCH_NORM", "batch norm"), ("BATCH_NORM_COND", "batch norm")):
        if key in model:
            m.drop_or_decide(f"model.{key}", model[key], not _number(model[key]),
                             f"{model[key]}: off, as in today's flow (no {what})",
                             f"{model[key]}: no {what} in today's flow; infer.WEIGHT_DECAY and "
                             "CONDITION_NOISE regularise")
    for key in MLP_MODEL_KEYS:
        if key in model:
            m.decide(f"model.{key}", f"{model[key]}: no counterpart yet (the supervised MLP "
                     "baseline, train_mlp, is not implemented)", model[key])


def _losses(m) -> None:
    losses = m.raw.get("losses") or {}
    for key in CINN_LOSS_KEYS:
        if key not in losses:
            continue
        value, likelihood = _number(losses[key]), key == "lambd_max_likelihood"
        m.drop_or_decide(f"losses.{key}", losses[key], bool(value) if likelihood else value == 0,
                         f"{losses[key]}: the flow is fitted by maximum likelihood" if likelihood
                         else "0: off; the flow is fitted by maximum likelihood only",
                         f"{losses[key]}: the flow is fitted by maximum likelihood only (no MMD, "
                         "MAE or MSE terms)")


def _sample_posterior(m) -> None:
    sp = m.raw.get("sample_posterior") or {}
    for key, value in sp.items():
        n = _int(value)
        if key == "NUM_SAMPLES" and n is not None and n >= 10:
            m.put("sample_posterior.NUM_SAMPLES", "infer", "NUM_SAMPLES", n)
        elif key == "NUM_SAMPLES":
            m.decide("sample_posterior.NUM_SAMPLES", f"{value}: infer.NUM_SAMPLES needs at least "
                     "10 samples per object", value)
        else:
            m.decide(f"sample_posterior.{key}", f"{value}: no counterpart in infer:", value)


def _peak_detection(m) -> None:
    pd = m.raw.get("peak_detection") or {}
    reasons = {
        "MIN_PEAK_HEIGHT": "an absolute KDE density of the scaled field; infer.PEAK_MIN_HEIGHT is "
                           "relative to the highest mode (default 0.2 kept)",
        "MIN_PEAK_PROMINENCE": "an absolute KDE density; today a mode's prominence is fixed at "
                               "0.1 of the highest mode",
        "EVAL_BINS": "today's binned KDE has a fixed 64 bins",
        "MIN_PEAK_DISTANCE": "no minimum distance between modes today (the prominence cut "
                             "separates them); infer.MAX_MODES caps their number",
    }
    for key, value in pd.items():
        m.decide(f"peak_detection.{key}", f"{value}: " + reasons.get(key, "no counterpart in infer:"),
                 value)


def _sets(m) -> None:
    """TRAIN_SETS: the simulated sets with UNOBSERVABLES (all with the same fields, as infer
    requires); INFER_SETS: every set of prepare.SETS."""
    pr = m.new["prepare"]
    names = [s for s, _ in pr.get("SETS", [])]
    if not names:
        return
    unobs = dict(zip(names, pr.get("UNOBSERVABLES") or [None] * len(names)))
    obs = dict(zip(names, pr.get("OBSERVABLES") or [None] * len(names)))
    train = [s for s in names if unobs[s] and m.kinds.get(s) != "survey"]
    fields = {(tuple(obs[s] or ()), tuple(unobs[s])) for s in train}
    if len(fields) == 1:
        m.add("infer", "TRAIN_SETS", train, "the simulated sets of prepare.SETS with "
              "UNOBSERVABLES; survey sets get posteriors, the flow learns from simulations")
    elif train:
        m.decide("infer.TRAIN_SETS", f"{train} have UNOBSERVABLES but not the same OBSERVABLES "
                 "and UNOBSERVABLES; sets trained together need the same fields", train)
    else:
        m.decide("infer.TRAIN_SETS", "no simulated set has prepare.UNOBSERVABLES: the flow has "
                 "nothing to learn; list them there", None)
    m.add("infer", "INFER_SETS", names, "every set of prepare.SETS gets posterior samples")
