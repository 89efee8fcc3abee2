"""What a call costs the call handler's one Python interpreter, part by part, each against its
baseline in the same run (the machine is shared; ratios hold where absolute times do not).

    .venv/bin/python bench/handler_costs.py --frames 50000 --alarms 2000 --rate 100

1. Prompt frames: ``RtpOut.send_payload`` (our packing, callcenter/sip/rtp_out.py) against
   aiortp's ``send_frame_auto`` on the same real RTP session, ``--frames`` each, alternated
   three times: CPU µs per frame (``time.process_time``; the kernel's ``sendto`` included).
2. Alarm writing: the real ``AlarmWriter`` on PostgreSQL with the seeded district, fed
   ``--alarms`` service presses at ``--rate``/s from one thread (as a handler's event loop
   hands them over), for each linger setting of ``--lingers`` (ms) and writer count of
   ``--writers``: CPU ms per alarm of the whole process (the writer threads' Python and
   psycopg's work are what this process does), transactions, commit time p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiortp import RTPSession
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from storm import Database, percentile

from callcenter.alarm_writer import AlarmWriter
from callcenter.intake import Press
from callcenter.logging_setup import configure_logging
from callcenter.models import AlarmKind, AlarmSource
from callcenter.sip.pacer import pcmu_frames
from callcenter.sip.rtp_out import RtpOut
from devices.models import Terminal


async def frame_costs(frames: int, rounds: int = 3) -> tuple[float, float]:
    """(ours, aiortp's) CPU µs per frame, each the median of ``rounds`` alternated runs."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    session = await RTPSession.create(
        local_addr=("127.0.0.1", 0), remote_addr=sink.getsockname(), payload_type=0
    )
    payload = pcmu_frames(b"\x10\x00" * 160)[0]
    sender = session._sender
    assert sender is not None
    out = RtpOut()
    target = session._remote_addr  # what RtpOut's old path passed to aiortp
    ours: list[float] = []
    theirs: list[float] = []
    try:
        for _ in range(rounds):
            t0 = time.process_time()
            for i in range(frames):
                out.send_payload(session, payload, i == 0)
            ours.append((time.process_time() - t0) / frames * 1e6)
            t0 = time.process_time()
            for i in range(frames):
                sender.send_frame_auto(payload, marker=1 if i == 0 else 0, addr=target)
            theirs.append((time.process_time() - t0) / frames * 1e6)
    finally:
        await session.close()
        sink.close()
    return sorted(ours)[rounds // 2], sorted(theirs)[rounds // 2]


def _mark_done(done_at: dict[int, float], n: int, _future: object) -> None:
    done_at[n] = time.monotonic()


def writer_cost(
    database: Database, terminals: list[tuple[int, int | None]], *, alarms: int, rate: float,
    linger_ms: int, writers: int, tag: str,
) -> dict[str, float]:  # fmt: skip
    sessions = sessionmaker(database.engine, expire_on_commit=False)
    writer = AlarmWriter(sessions, threads=writers, linger_s=linger_ms / 1000)
    futures = []
    submitted: list[float] = []
    done_at: dict[int, float] = {}
    t0 = time.process_time()
    start = time.monotonic()
    for n in range(alarms):
        due = start + n / rate
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        terminal_id, elder_id = terminals[n % len(terminals)]
        press = Press(
            source=AlarmSource.DTMF, kind=AlarmKind.SERVICE,
            dedup_key=f"bench:{tag}:{n}", terminal_id=terminal_id, elder_id=elder_id,
        )  # fmt: skip
        submitted.append(time.monotonic())
        future = writer.submit(press)
        future.add_done_callback(functools.partial(_mark_done, done_at, n))
        futures.append(future)
    for future in futures:
        future.result(timeout=120)
    cpu = time.process_time() - t0
    writer.close()
    waits = [(done_at[n] - submitted[n]) * 1000 for n in range(alarms)]
    return {
        "cpu_ms_per_alarm": cpu / alarms * 1000,
        "batches": writer.batches,
        "p50_ms": percentile(waits, 0.5),
        "p99_ms": percentile(waits, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=50_000)
    parser.add_argument("--alarms", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=100.0, help="presses/s into the writer")
    parser.add_argument("--lingers", default="0,30", help="linger settings to compare, ms")
    parser.add_argument("--writers", default="2,1", help="writer thread counts to compare")
    args = parser.parse_args()
    configure_logging("WARNING")  # as the handlers run in the storm benchmarks
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")

    ours, theirs = asyncio.run(frame_costs(args.frames))
    print("\n| prompt frame path | CPU µs per frame | ratio |\n|---|---|---|")
    print(f"| aiortp send_frame_auto | {theirs:.1f} | 1.00 |")
    print(f"| RtpOut.send_payload (ours) | {ours:.1f} | {ours / theirs:.2f} |")

    database = Database()
    try:
        with Session(database.engine) as s:
            terminals = [
                (t.id, t.elder_id)
                for t in s.scalars(select(Terminal).where(Terminal.elder_id.is_not(None)))
            ]
        print(
            f"\n| writer, {args.rate:.0f} presses/s × {args.alarms} | CPU ms per alarm | "
            "transactions | press → committed p50 / p99 ms |\n|---|---|---|---|"
        )
        for round_ in range(2):  # twice, interleaved: the second round shows the noise
            for writers in (int(w) for w in args.writers.split(",")):
                for linger in (int(x) for x in args.lingers.split(",")):
                    database.clear_alarms()
                    r = writer_cost(
                        database, terminals, alarms=args.alarms, rate=args.rate,
                        linger_ms=linger, writers=writers, tag=f"{round_}-{writers}-{linger}",
                    )  # fmt: skip
                    print(
                        f"| {writers} writer(s), linger {linger} ms (round {round_ + 1}) | "
                        f"{r['cpu_ms_per_alarm']:.2f} | {r['batches']:.0f} | "
                        f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f} |"
                    )
    finally:
        database.drop()
    print(f"\nload average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
