"""Distillation: KD losses (usable in your own loop), the teacher-output cache and the trainer.

``LOSSES`` names every KD method without importing torch (recipes are validated against it before any heavy
import); add your own with ``LOSSES.register("name", MyLoss)`` — a class with ``from_config(cfg, **extra)``
returning ``{"loss", "parts"}`` (see :mod:`edgekd.distill.losses`).
"""

from edgekd.deploy.registry import Registry

LOSSES: Registry = Registry("distill.method")
for _name, _cls in (("kd", "KDLoss"), ("dkd", "DKDLoss"), ("multi", "MultiTeacherKDLoss"), ("fitnet", "FitNetLoss"),
                    ("at", "ATLoss"), ("hidden", "HiddenKDLoss")):
    LOSSES.register_lazy(_name, f"edgekd.distill.losses:{_cls}")

#: methods whose loss reads the teacher's intermediate features (``uses_features``): the teacher must run online,
#: so a logit cache cannot serve them (checked by recipe validation, which must not import torch; a test keeps
#: this tuple equal to the losses' own ``uses_features``)
FEATURE_METHODS = ("fitnet", "at", "hidden")
