"""One party's slice of a linear model, with its torch optimizer.

Each party keeps its own weights in its own process; only gradients computed under the protocol
update them. The brand's slice has the intercept. L2 regularization is the optimizer's weight
decay on the weights (never on the intercept).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch  # type: ignore[import-not-found, unused-ignore]


class OptimizerKind(enum.Enum):
    """The optimizers a job can use."""

    ADAM = "adam"
    SGD = "sgd"
    NESTEROV = "nesterov"


@dataclass(frozen=True)
class OptimizerConfig:
    """Optimizer settings, identical on both sides of a job."""

    kind: OptimizerKind = OptimizerKind.ADAM
    learning_rate: float = 0.05
    l2: float = 1e-4
    momentum: float = 0.9

    def __post_init__(self) -> None:
        if self.learning_rate <= 0 or self.l2 < 0 or not 0 <= self.momentum < 1:
            raise ValueError("learning_rate > 0, l2 >= 0 and 0 <= momentum < 1 are required")


class LinearPart:
    """Weights for ``n_features`` columns (plus an intercept if ``intercept``) and an optimizer."""

    def __init__(self, n_features: int, *, intercept: bool, config: OptimizerConfig) -> None:
        self._weights = torch.zeros(n_features, dtype=torch.float64, requires_grad=True)
        self._bias = torch.zeros(1 if intercept else 0, dtype=torch.float64, requires_grad=True)
        groups = [{"params": [self._weights], "weight_decay": config.l2}]
        if intercept:
            groups.append({"params": [self._bias], "weight_decay": 0.0})
        self._opt: torch.optim.Optimizer
        if config.kind is OptimizerKind.ADAM:
            self._opt = torch.optim.Adam(groups, lr=config.learning_rate)
        else:
            self._opt = torch.optim.SGD(
                groups,
                lr=config.learning_rate,
                momentum=config.momentum,
                nesterov=config.kind is OptimizerKind.NESTEROV,
            )

    @property
    def n_features(self) -> int:
        """Number of feature weights."""
        return int(self._weights.shape[0])

    def scores(self, features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Linear scores ``X·w (+ b)`` of this slice."""
        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float64))
            out = x @ self._weights
            if self._bias.numel():
                out = out + self._bias
            result: npt.NDArray[np.float64] = out.numpy().copy()
            return result

    def step(self, weight_grad: npt.NDArray[np.float64], bias_grad: float = 0.0) -> None:
        """Apply one optimizer step with the given gradient of the data loss."""
        self._weights.grad = torch.from_numpy(np.asarray(weight_grad, dtype=np.float64).copy())
        if self._bias.numel():
            self._bias.grad = torch.tensor([bias_grad], dtype=torch.float64)
        self._opt.step()
        self._opt.zero_grad(set_to_none=True)

    def snapshot(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """A copy of ``(weights, intercept)``."""
        with torch.no_grad():
            return self._weights.numpy().copy(), self._bias.numpy().copy()

    def restore(self, snapshot: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]) -> None:
        """Set the weights back to a snapshot."""
        with torch.no_grad():
            self._weights.copy_(torch.from_numpy(snapshot[0]))
            self._bias.copy_(torch.from_numpy(snapshot[1]))
