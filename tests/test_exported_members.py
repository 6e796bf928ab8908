import pytest

import pec

pytestmark = pytest.mark.unit


def test_pec_exports() -> None:
    assert sorted(pec.__all__) == ["PecError", "__version__"]
