"""Vertical federated logistic regression: brand labels, partner features, Paillier residuals.

Protocol roles are state machines with no I/O (:class:`BrandTrainer`, :class:`PartnerTrainer`);
:mod:`federated.messages` lists what crosses between them, :mod:`federated.wire` encodes it, and
:func:`run_in_process` runs both roles in one process (the in-memory twin of the Flower transport).
The model pieces use torch. Errors are drawn in :mod:`federated.errors`.
"""

from __future__ import annotations

from federated.brand import BrandStage, BrandTrainer, TrainingConfig
from federated.errors import FederatedError, ProtocolError, RoleFinishedError, WireFormatError
from federated.local import Transcript, run_in_process
from federated.metrics import ks_statistic, log_loss, roc_auc
from federated.model import OptimizerConfig, OptimizerKind
from federated.partner import PartnerConfig, PartnerStage, PartnerTrainer
from federated.wire import from_wire, to_wire

__all__ = [
    "BrandStage",
    "BrandTrainer",
    "FederatedError",
    "OptimizerConfig",
    "OptimizerKind",
    "PartnerConfig",
    "PartnerStage",
    "PartnerTrainer",
    "ProtocolError",
    "RoleFinishedError",
    "TrainingConfig",
    "Transcript",
    "WireFormatError",
    "from_wire",
    "ks_statistic",
    "log_loss",
    "roc_auc",
    "run_in_process",
    "to_wire",
]
