"""A real call-handler process (``hyt sip``) on loopback, for SIPp and raw-socket tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

# Re-exported: tests and bench/ scripts import these from here.
from tests.sip.handler_process import Centre as Centre
from tests.sip.handler_process import options_ok as options_ok
from tests.sip.handler_process import options_status as options_status
from tests.sip.handler_process import rtp_block as rtp_block
from tests.sip.handler_process import running_centre

BACKENDS = ["aiosipua", "pyvoip"]


@pytest.fixture(params=BACKENDS)
def centre(
    request: pytest.FixtureRequest, fresh_postgres_url: str, tmp_path: Path
) -> Iterator[Centre]:
    marker = request.node.get_closest_marker("centre_env")
    env = {"HYT_LIFE_SAFETY_HOLD_S": "15", **(marker.kwargs if marker else {})}
    with running_centre(fresh_postgres_url, request.param, tmp_path / "centre.log", env) as c:
        yield c
