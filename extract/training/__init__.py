"""Training: standard, PGD-AT and TRADES on a dataset, resumable, checkpoints with sidecars
(:mod:`.loop`), and ``nc-train`` (:mod:`.cli`)."""

from .loop import (
    MODES,
    SCHEDULES,
    TrainConfig,
    TrainError,
    attack_mode,
    eval_mode,
    evaluate,
    lr_factor,
    robust_attack,
    trades_loss,
    train,
    training_loss,
)

__all__ = ["MODES", "SCHEDULES", "TrainConfig", "TrainError", "attack_mode", "eval_mode",
           "evaluate", "lr_factor", "robust_attack", "trades_loss", "train", "training_loss"]
