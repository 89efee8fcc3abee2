"""Operations endpoints: ``/healthz`` (liveness), ``/readyz`` (readiness), ``/metrics``.

``/healthz`` and ``/readyz`` answer anyone: load balancers, Kamailio's and the orchestrator's
probes carry no credentials, and the answers hold no personal data (checks, counts, ages; a
database error is named by its type only, the full text goes to the log).

``/metrics`` holds no personal data either (counts and durations, no ids or names), but it tells
how busy the centre is, so it is for the monitoring system only: with ``HYT_METRICS_TOKEN`` set,
the scraper sends ``Authorization: Bearer <token>`` (Prometheus ``authorization`` in the scrape
config); without it, only loopback clients get an answer. Behind a reverse proxy on the same host
every request comes from loopback: set the token, or do not forward ``/metrics``.
"""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from callcenter import db, metrics, readiness
from callcenter.ops_settings import get_ops_settings
from callcenter.settings import get_settings

router = APIRouter(tags=["operations"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: the process answers (restart it if not). Touches nothing else."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"description": "a check failed; each check says why"}},
)
async def readyz() -> JSONResponse:
    """Readiness: database, SIP listeners and edge (if this process runs SIP), scheduler leader,
    SMS outbox backlog; 200 if every check passes, else 503, with a reason per check."""
    checks = await readiness.run_checks(
        db.get_engine(), get_ops_settings(), edge=get_settings().sip_registrar
    )
    ready = all(c.ok for c in checks.values())
    body = {
        "status": "ready" if ready else "not_ready",
        "checks": {name: check.as_json() for name, check in checks.items()},
    }
    return JSONResponse(body, status_code=200 if ready else status.HTTP_503_SERVICE_UNAVAILABLE)


def _may_scrape(request: Request) -> bool:
    token = get_ops_settings().metrics_token
    if token:
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), token.encode()
        )
    try:
        return ipaddress.ip_address(request.client.host if request.client else "").is_loopback
    except ValueError:
        return False


@router.get("/metrics", include_in_schema=False)
def prometheus_metrics(request: Request) -> Response:
    """Prometheus text format; the database figures are read now (see callcenter.metrics)."""
    if not _may_scrape(request):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "metrics are for the monitoring system")
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)
