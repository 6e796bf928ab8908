"""Bearer-token authentication and roles.

Roles: ``ingest`` writes events and asks checks; ``compliance`` reads and verifies everything
(consent, job manifests); ``modeler`` submits jobs and reads their status and results; ``admin``
may do all of it and run maintenance. A missing or unknown token gets 401, a known token
with the wrong role 403. Tokens are compared by their SHA-256 digest; none is ever logged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer


class Role(StrEnum):
    """What a caller may do."""

    ADMIN = "admin"
    INGEST = "ingest"
    COMPLIANCE = "compliance"
    MODELER = "modeler"


class TokenRegistry:
    """Maps token digests to roles."""

    def __init__(self, digests: Mapping[str, Role]) -> None:
        self._digests = dict(digests)

    @classmethod
    def from_tokens(cls, tokens: Mapping[str, Role]) -> TokenRegistry:
        """Build from raw tokens (tests, development)."""
        return cls({hashlib.sha256(t.encode()).hexdigest(): r for t, r in tokens.items()})

    def role_of(self, token: str) -> Role | None:
        """The role of a presented token, or None."""
        return self._digests.get(hashlib.sha256(token.encode("utf-8")).hexdigest())


_bearer = HTTPBearer(auto_error=False, description="API token of the caller's role.")


def require(*roles: Role) -> Callable[..., Role]:
    """Return a dependency that admits ``admin`` and the given roles."""
    allowed = {Role.ADMIN, *roles}

    def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Role:
        registry: TokenRegistry = request.app.state.tokens
        role = registry.role_of(credentials.credentials) if credentials else None
        if role is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="a valid bearer token is required",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if role not in allowed:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                detail=f"role {role.value!r} may not do this; needs one of "
                + ", ".join(sorted(r.value for r in allowed)),
            )
        return role

    return dependency
