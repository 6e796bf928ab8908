"""PEC: privacy-enhanced computation for marketing data.

The core package: crypto building blocks (``pec.crypto``), settings, errors and the ``pec`` CLI.
Protocols live in :mod:`psi` and :mod:`federated`, the consent ledger in :mod:`consent`, party
nodes in :mod:`parties` and the HTTP control plane in :mod:`api`.
"""

from __future__ import annotations

from pec.errors import PecError

__version__ = "0.1.0"
__all__ = ["PecError", "__version__"]
