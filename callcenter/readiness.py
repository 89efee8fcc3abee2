"""Is this process ready to do its work? The checks behind ``/readyz``.

- ``database``: ``SELECT 1`` answers within ``HYT_READY_TIMEOUT_S``.
- ``sip``: if this process runs SIP listeners, each socket is open, and with a SIP edge
  (``HYT_SIP_REGISTRAR``) the edge answers an OPTIONS (Kamailio answers OPTIONS addressed to
  itself, deploy/kamailio/kamailio.cfg). A process without SIP passes (nothing to check here).
- ``scheduler``: a scheduler leads: its PostgreSQL advisory lock is held by some session, or
  (SQLite has no such lock; a leader just replaced) a job ran within
  ``HYT_READY_SCHEDULER_STALE_S``.
- ``outbox``: unsent SMS at most ``HYT_READY_OUTBOX_MAX``, the oldest younger than
  ``HYT_READY_OUTBOX_MAX_AGE_S`` (a Twilio outage shows here before volunteers notice).

Each result carries a short reason, Chinese first, and figures; never personal data.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import Engine, text

from callcenter import ops_queries
from callcenter.db import utcnow
from callcenter.db_probe import ProbeTimeout, run_with_deadline_async
from callcenter.ops_settings import OpsSettings
from callcenter.sip import listener_registry
from schedules.settings import get_schedule_settings

log = structlog.get_logger(__name__)
DATABASE_CHECKS = ("database", "scheduler", "outbox")


@dataclass(frozen=True, slots=True)
class Check:
    ok: bool
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "reason": self.reason, **self.detail}


def _scheduler_check(
    state: ops_queries.SchedulerState, ops: OpsSettings, now: dt.datetime
) -> Check:
    age = ops_queries.age_s(state.last_run_at, now)
    detail: dict[str, Any] = {
        "lock_held": state.lock_held,
        "last_run_age_s": None if age is None else round(age, 1),
        "last_job": state.last_job,
    }
    if state.lock_held:
        return Check(True, "调度器在运行 / scheduler leader holds the lock", detail)
    if age is not None and age <= ops.ready_scheduler_stale_s:
        return Check(True, "调度器最近运行过 / a scheduler job ran recently", detail)
    if state.lock_held is False:
        return Check(False, "没有调度器在运行 / no scheduler holds the leader lock", detail)
    return Check(False, "调度器长时间未运行 / no scheduler job ran recently", detail)


def _outbox_check(state: ops_queries.OutboxState, ops: OpsSettings, now: dt.datetime) -> Check:
    age = ops_queries.age_s(state.oldest_unsent_at, now)
    detail: dict[str, Any] = {
        "unsent": state.unsent,
        "due": state.due,
        "failed": state.by_status.get("failed", 0),
        "oldest_unsent_age_s": None if age is None else round(age, 1),
        "max": ops.ready_outbox_max,
        "max_age_s": ops.ready_outbox_max_age_s,
    }
    if state.unsent > ops.ready_outbox_max:
        return Check(False, "短信积压过多 / too many SMS waiting to be sent", detail)
    if age is not None and age > ops.ready_outbox_max_age_s:
        return Check(False, "短信长时间未发出 / an SMS has waited too long", detail)
    return Check(True, "短信发送正常 / SMS outbox is moving", detail)


def database_checks(
    engine: Engine, ops: OpsSettings, names: tuple[str, ...], now: dt.datetime | None = None
) -> dict[str, Check]:
    """The checks that need the database, on one connection (runs on the probe pool)."""
    now = now or utcnow()
    results: dict[str, Check] = {}
    started = time.perf_counter()
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
        ping_ms = round((time.perf_counter() - started) * 1000, 1)
        results["database"] = Check(True, "数据库正常 / database answers", {"ping_ms": ping_ms})
        if "scheduler" in names:
            key = get_schedule_settings().scheduler_lock_key
            results["scheduler"] = _scheduler_check(
                ops_queries.scheduler_state(conn, lock_key=key), ops, now
            )
        if "outbox" in names:
            results["outbox"] = _outbox_check(ops_queries.outbox_state(conn, now=now), ops, now)
        conn.rollback()
    return results


def _options_request(host: str, port: int, local: tuple[str, int]) -> bytes:
    tag, call_id, branch = (secrets.token_hex(6) for _ in range(3))
    lhost, lport = local[0], local[1]
    return (
        f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {lhost}:{lport};branch=z9hG4bK{branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:readyz@{lhost}>;tag={tag}\r\n"
        f"To: <sip:{host}:{port}>\r\n"
        f"Call-ID: {call_id}@{lhost}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "User-Agent: HuYuanTong-readyz\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def split_edge(edge: str) -> tuple[str, int]:
    """``kamailio.local:5060`` / ``10.0.0.5`` / ``[::1]:5060`` → (host, port)."""
    if edge.startswith("["):
        host, _, rest = edge[1:].partition("]")
        return host, int(rest.lstrip(":") or 5060)
    if edge.count(":") == 1:
        host, port = edge.split(":")
        return host, int(port)
    return edge, 5060


async def probe_edge(edge: str, timeout_s: float) -> Check:
    """Send one OPTIONS to the SIP edge; any 2xx within ``timeout_s`` means it is there."""
    host, port = split_edge(edge)
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[bytes] = loop.create_future()

    class Protocol(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
            if not answer.done() and data.startswith(b"SIP/2.0 "):
                answer.set_result(data)

        def error_received(self, exc: Exception) -> None:  # ICMP port unreachable
            if not answer.done():
                answer.set_exception(exc)

    detail = {"edge": f"{host}:{port}"}
    try:
        transport, _ = await loop.create_datagram_endpoint(Protocol, remote_addr=(host, port))
    except OSError as exc:
        return Check(
            False,
            "无法连接 SIP 边缘 / cannot reach the SIP edge",
            {**detail, "error": type(exc).__name__},
        )
    try:
        transport.sendto(_options_request(host, port, transport.get_extra_info("sockname")))
        data = await asyncio.wait_for(answer, timeout_s)
    except (TimeoutError, OSError) as exc:
        return Check(
            False,
            "SIP 边缘无应答 / the SIP edge does not answer OPTIONS",
            {**detail, "error": type(exc).__name__},
        )
    finally:
        transport.close()
    status_line = data.split(b"\r\n", 1)[0].decode("utf-8", "replace")[:64]
    ok = status_line.startswith("SIP/2.0 2")
    reason = "SIP 边缘正常 / SIP edge answers" if ok else "SIP 边缘拒绝 / SIP edge refuses OPTIONS"
    return Check(ok, reason, {**detail, "answer": status_line})


async def sip_check(edge: str, timeout_s: float) -> Check:
    running = listener_registry.listeners()
    if not running:
        return Check(True, "本进程不处理 SIP / this process runs no SIP listener")
    detail: dict[str, Any] = {
        "listeners": [
            {"backend": s.backend, "role": s.role, "port": s.port, "listening": s.listening}
            for s in running
        ]
    }
    if not all(s.listening for s in running):
        return Check(False, "SIP 端口已关闭 / a SIP listener is closed", detail)
    if not edge:
        return Check(True, "SIP 端口在监听 / SIP listeners are open", detail)
    probed = await probe_edge(edge, timeout_s)
    return Check(probed.ok, probed.reason, {**detail, **probed.detail})


async def run_checks(
    engine: Engine, ops: OpsSettings, *, edge: str, names: tuple[str, ...] | None = None
) -> dict[str, Check]:
    """Every check in ``names`` (default: ``HYT_READY_CHECKS``), each within the deadline."""
    names = names if names is not None else ops.ready_check_names
    timeout = ops.ready_timeout_s
    wanted_db = tuple(n for n in names if n in DATABASE_CHECKS)

    async def from_database() -> dict[str, Check]:
        if not wanted_db:
            return {}
        try:
            return await run_with_deadline_async(
                lambda: database_checks(engine, ops, wanted_db), timeout
            )
        except ProbeTimeout:
            log.warning("readyz.database_timeout", timeout_s=timeout)
            why, error = "数据库超时 / database did not answer in time", "timeout"
        except Exception as exc:  # any driver error: the database cannot be used now
            log.warning("readyz.database_unreachable", error=f"{type(exc).__name__}: {exc}"[:300])
            why, error = "数据库无法连接 / database unreachable", type(exc).__name__
        failed = {"database": Check(False, why, {"error": error})}
        for name in wanted_db:
            if name != "database":
                failed[name] = Check(False, "未知：数据库不可用 / unknown: database down")
        return failed

    async def sip() -> dict[str, Check]:
        return {"sip": await sip_check(edge, timeout)} if "sip" in names else {}

    db_results, sip_results = await asyncio.gather(from_database(), sip())
    merged = {**db_results, **sip_results}
    return {name: merged[name] for name in names if name in merged}
