from __future__ import annotations

import hashlib

import pytest
from pydantic import ValidationError

from api import Role
from api.settings import ApiSettings, token_digest

pytestmark = pytest.mark.unit


def test_tokens_are_digests_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    digest = hashlib.sha256(b"s3cret-token").hexdigest()
    monkeypatch.setenv("PEC_API_TOKENS", f'{{"{digest}": "compliance"}}')
    assert ApiSettings().tokens == {digest: Role.COMPLIANCE}


@pytest.mark.parametrize(
    "token_map", [{"plain-token": "admin"}, {token_digest("changeme"): "admin"}]
)
def test_raw_or_placeholder_tokens_are_rejected(token_map: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        ApiSettings(tokens=token_map)  # type: ignore[arg-type]
