"""A power cut: the district's whole fleet reports mains loss by SCAIP while elders press SOS.

Issue #3: "the district's whole fleet (13,833 terminals) reporting mains loss within 10 minutes
absorbed with nothing lost and life-safety alarms still answered first". Here the wave is
compressed (default: 13,833 reports in 120 s, five times harsher than 10 minutes) and SOS calls
(SIPp, RFC 2833 digit "1") run alongside; the same SOS calls alone, against a fresh handler in the
same run, are the baseline their answer and commit times are compared with.

    .venv/bin/python bench/mains_loss.py --reports 13833 --seconds 120 --sos-rate 2

PostgreSQL (HYT_TEST_POSTGRES_URL or the local one), district of 13,500 elders seeded first.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from storm import (
    Database,
    cpu_seconds,
    free_port_pair,
    free_udp_port,
    options_status,
    percentile,
    run_sipp,
    start_handler,
    start_rtp_sink,
)

from callcenter.models import AlarmKind
from devices.models import TerminalProtocol
from tests.sip.sipp import call_scenario, scaip_scenario

MAINS_LOSS = (
    "<mrq><ref>[call_number]</ref><cid>[field0]</cid><dty>0003</dty>"
    "<mty>ME</mty><stc>0085</stc></mrq>"
)


def run(database: Database, *, reports: int, seconds: float, sos_rate: float) -> dict[str, str]:
    database.clear_alarms()
    port = free_udp_port()
    sink = free_port_pair()
    all_users = [u for p in TerminalProtocol for u in database.users(p)]
    sos_users = database.users(TerminalProtocol.DTMF)
    sos_calls = int(sos_rate * seconds)
    results: dict[str, tuple[int, int, list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        proc = start_handler(database, "aiosipua", port, work / "handler.log")
        sink_proc = start_rtp_sink(sink)
        try:
            cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()

            def sos() -> None:
                (work / "sos").mkdir()
                scenario = call_scenario(user="[field0]", digits="1", hangup="caller",
                                         hold_ms=2000, media_port=sink)  # fmt: skip
                results["sos"] = run_sipp(scenario, sos_users, port, sos_rate, sos_calls,
                                          work / "sos")  # fmt: skip

            def wave() -> None:
                (work / "wave").mkdir()
                scenario = scaip_scenario(user="[field0]", mrq=MAINS_LOSS)
                results["wave"] = run_sipp(scenario, all_users, port, reports / seconds, reports,
                                           work / "wave")  # fmt: skip

            threads = [threading.Thread(target=sos)]
            if reports:
                threads.append(threading.Thread(target=wave))
            for thread in threads:
                thread.start()
                time.sleep(0.5)  # each SIPp picks its free port in turn
            for thread in threads:
                thread.join()
            time.sleep(2)
            cpu = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0) * 100
            assert options_status("127.0.0.1", port, 2.0) == 200, "handler stopped answering"
        finally:
            sink_proc.terminate()
            proc.terminate()
            proc.wait(timeout=180)
    alarms = database.alarms()
    sos_alarms = [a for a in alarms if a.kind is AlarmKind.LIFE_SAFETY]
    wave_alarms = [a for a in alarms if a.kind is AlarmKind.TECHNICAL]
    commit_ms = [(a.received_at.timestamp() - float(a.raw["invite_at"])) * 1000
                 for a in sos_alarms if a.raw.get("invite_at")]  # fmt: skip
    sos_ok, _, sos_rtt = results["sos"]
    wave_ok, _, wave_rtt = results.get("wave", (0, 0, []))
    keys = [a.dedup_key for a in wave_alarms]
    return {
        "run": f"{reports} mains-loss reports in {seconds:g} s + SOS {sos_rate:g}/s"
        if reports
        else f"SOS {sos_rate:g}/s alone (baseline)",
        "mains loss stored / lost / dup": f"{len(set(keys))} / {reports - len(set(keys))} / "
        f"{len(keys) - len(set(keys))}"
        if reports
        else "–",
        "MESSAGE→200 p50/p99 ms": f"{percentile(wave_rtt, 0.5):.0f} / "
        f"{percentile(wave_rtt, 0.99):.0f}"
        if reports
        else "–",
        "SOS answered / stored": f"{sos_ok}/{sos_calls} / {len(sos_alarms)}",
        "SOS INVITE→200 p50/p99 ms": f"{percentile(sos_rtt, 0.5):.0f} / "
        f"{percentile(sos_rtt, 0.99):.0f}",
        "SOS INVITE→alarm committed p50/p99 ms": f"{percentile(commit_ms, 0.5):.0f} / "
        f"{percentile(commit_ms, 0.99):.0f}",
        "handler CPU": f"{cpu:.0f} %",
        "wave answered": f"{wave_ok}",
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reports", type=int, default=13_833)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--sos-rate", type=float, default=2)
    args = parser.parse_args()
    database = Database()
    rows = []
    try:
        for reports in (0, args.reports):
            rows.append(run(database, reports=reports, seconds=args.seconds,
                            sos_rate=args.sos_rate))  # fmt: skip
            print(rows[-1], flush=True)
    finally:
        database.drop()
    header = list(rows[0])
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row[h] for h in header) + " |")


if __name__ == "__main__":
    main()
