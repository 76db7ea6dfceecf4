"""What the classification jobs share: the checkpoints of a job (one model or the members of an ensemble), loaded
and checked together, and the frozen VGG a multi-view member's features come from."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from shapes3d.classify import evaluation, mvcnn_data
from shapes3d.classify.config import ClassifyConfig
from shapes3d.errors import CheckpointError, Shapes3DError

PathLike = str | os.PathLike


def as_list(paths) -> list:
    """One path or a sequence of them, as a list."""
    return [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)


def check_prior_tau(prior_tau) -> None:
    if isinstance(prior_tau, bool) or not isinstance(prior_tau, (int, float)) or not 0 <= prior_tau <= 2:
        raise Shapes3DError(f"--prior-tau: {prior_tau!r} is out of range [0, 2]")


def extractor(cfg: ClassifyConfig, device, expect: dict | None = None, where: PathLike = "checkpoint"):
    """The frozen VGG of a multi-view config (None for VoxNet and fine-tuned models), checked against ``expect``."""
    if cfg.model.kind != "mvcnn" or not cfg.model.mvcnn.frozen:
        return None
    ex = mvcnn_data.feature_extractor(cfg, device)
    mvcnn_data.check_source(ex.source, expect, str(where))
    return ex


@dataclass
class Member:
    """One loaded checkpoint of a job: the model (eval mode, on its device), its config and class names."""

    checkpoint: Path
    model: object
    cfg: ClassifyConfig
    classes: list[str]

    @property
    def device(self):
        return next(self.model.parameters()).device

    def extractor(self):
        """The frozen VGG this member's features need (None when it takes voxels or views)."""
        return extractor(self.cfg, self.device, getattr(self.model, "feature_source", None), self.checkpoint)


def load_members(checkpoints, *, prior_tau: float | None, job: str, device: str = "auto") -> tuple[list[Member], float]:
    """The checkpoints of ``job`` (``"evaluate"``, ``"predict"``) and the prior correction to apply.

    Several checkpoints must share their classes. ``prior_tau`` None takes the first checkpoint's config
    ``prior_tau``; a correction needs every member's recorded training class counts.
    """
    paths = [Path(c) for c in as_list(checkpoints)]
    if not paths:
        raise Shapes3DError(f"{job}: no checkpoint given")
    if prior_tau is not None:
        check_prior_tau(prior_tau)
    members = [Member(p, *evaluation.load_classifier(p, device=device)) for p in paths]
    first = members[0]
    tau = first.cfg.prior_tau if prior_tau is None else prior_tau
    for m in members[1:]:
        if m.classes != first.classes:
            raise CheckpointError(m.checkpoint, f"its classes {m.classes} differ from those of {first.checkpoint} "
                                                f"({first.classes}); an ensemble needs members trained on the same "
                                                "classes")
    for m in members if tau else ():
        if m.model.train_class_counts is None:
            raise CheckpointError(m.checkpoint, "records no training class counts (written before they were), so "
                                                f"--prior-tau cannot correct for them; {job} it with --prior-tau 0")
    return members, tau


def training_prior(members: list[Member], prior_tau: float):
    """The members' mean training class frequencies when ``prior_tau`` corrects for them, else None."""
    return evaluation.training_prior([m.model.train_class_counts for m in members]) if prior_tau else None
