"""Outbox drain benchmark: how fast the gateway empties a deep outbox into a local HTTP sink, and
what intake does while it drains.

    .venv/bin/python bench/outbox_drain.py [--records 100000] [--max-in-flight 8 32 64] [--repeats 2]
                                           [--intake-duration 10] [--intake-conns 8]
                                           [--profile cprofile|py-spy|both]

1. Starts a minimal asyncio HTTP/1.1 keep-alive sink (this file, ``sink`` mode) on 127.0.0.1 that
   answers every POST with 200 and counts requests, and measures its ceiling once with several
   keep-alive clients (``client`` mode, a separate process).
2. Starts the gateway (temp data dir, synchronous=FULL, one ``http`` destination to the sink)
   with that destination PAUSED in ``destination_state`` before the first start, and queues
   ``--records`` distinct messages through MLLP with bench/out/mllp-load (MSH-10 unique,
   the CCCD rewritten to one of ``--people`` people). Checks the outbox holds that many pending
   rows, stops the gateway and keeps the data dir as a snapshot.
3. For each ``--max-in-flight`` value, ``--repeats`` times: a fresh copy of the snapshot, the
   gateway started on it, the pause flag cleared in SQLite, and the time until every row is
   delivered (read-only polls of the outbox every 0.5 s).
4. Intake while draining, on one more copy: mllp-load for ``--intake-duration`` s with the
   destination paused, then draining, then paused, then draining again (msgs/s, p99).
5. ``--profile``: one more drain under cProfile (reactor thread only) and/or py-spy (all
   threads, ``.venv/bin/py-spy`` or on PATH), written to bench/out/ with a text summary.

With taskset and >= 2 CPUs the gateway runs on CPU 1; the sink and mllp-load on CPU 0.
Everything is on 127.0.0.1. Raw results and logs go to bench/out/. See bench/README.md.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.mllp_throughput import (  # noqa: E402  (after the path insert)
    LOAD,
    MESSAGE as SAMPLE,
    OUT,
    build_load,
    cpu_seconds,
    free_port,
    log,
)

PYTHON = REPO / ".venv" / "bin" / "python"
HOST = "127.0.0.1"
DEST = "store"
GATEWAY_CPU, SIDE_CPU = "1", "0"
POLL_S = 0.5

# --- the sink --------------------------------------------------------------------------------

_RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n"
             b'{"status": "stored"}')


class _SinkProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and pipelining, Content-Length bodies only (Twisted's Agent sends
    one for a FileBodyProducer over BytesIO). ``GET /count`` answers the request count."""

    counter = [0]

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.buf = bytearray()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        out = []
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = bytes(buf[:end]).lower()
            length = 0
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17: stop if stop >= 0 else len(head)])
            elif b"\r\ntransfer-encoding:" in head:
                out.append(b"HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                self.transport.write(b"".join(out))
                self.transport.close()
                return
            total = end + 4 + length
            if len(buf) < total:
                break
            del buf[:total]
            if head.startswith(b"get /count"):
                body = str(self.counter[0]).encode()
                out.append(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            else:
                self.counter[0] += 1
                out.append(_RESPONSE)
        if out:
            self.transport.write(b"".join(out))


def serve_sink() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_SinkProtocol, HOST, 0, backlog=1024)
        print(server.sockets[0].getsockname()[1], flush=True)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        await stop.wait()
        server.close()
    asyncio.run(main())


class _ClientProtocol(asyncio.Protocol):
    def __init__(self, request: bytes, state: dict) -> None:
        self.request, self.state, self.buf = request, state, bytearray()

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15:].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self.buf) < end + 4 + length:
                return
            del self.buf[:end + 4 + length]
            self.state["done"] += 1
            if time.monotonic() < self.state["until"]:
                self.transport.write(self.request)


def run_client(port: int, conns: int, duration: float, body_bytes: int) -> None:
    """Keep-alive clients, one request in flight each: prints {"requests", "elapsed_s"}."""
    body = b"x" * body_bytes
    request = (b"POST /records HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               b"Idempotency-Key: 0123456789abcdef0123456789abcdef\r\nUser-Agent: hssk-gateway\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(body), body))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        state = {"done": 0, "until": time.monotonic() + duration}
        started = time.monotonic()
        for _ in range(conns):
            await loop.create_connection(lambda: _ClientProtocol(request, state), HOST, port)
        await asyncio.sleep(duration + 0.2)
        print(json.dumps({"requests": state["done"], "elapsed_s": time.monotonic() - started}), flush=True)
    asyncio.run(main())


# --- helpers ---------------------------------------------------------------------------------

def sched_wait_seconds(pid: int) -> float:
    """Seconds the process's threads spent runnable but waiting for a CPU (/proc/PID/task/*/schedstat):
    time lost to other processes on the same core, or to its own threads competing for it."""
    total = 0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


class Ctx:
    def __init__(self, args) -> None:
        self.args = args
        self.stamp = time.strftime("%Y%m%d-%H%M%S")
        self.raw = OUT / f"{self.stamp}-drain.jsonl"
        self.taskset = not args.no_taskset and shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2

    def pinned(self, cmd: list[str], cpu: str) -> list[str]:
        return ["taskset", "-c", cpu, *cmd] if self.taskset else cmd

    def record(self, entry: dict) -> None:
        with self.raw.open("a") as f:
            f.write(json.dumps(entry) + "\n")


def stop_proc(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


# --- the sink process --------------------------------------------------------------------------

class Sink:
    def __init__(self, ctx: Ctx) -> None:
        self.proc = subprocess.Popen(ctx.pinned([str(PYTHON), __file__, "sink"], SIDE_CPU), cwd=REPO,
                                     stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.port = int(self.proc.stdout.readline())

    def count(self) -> int:
        with urllib.request.urlopen(f"http://{HOST}:{self.port}/count", timeout=10) as r:
            return int(r.read())

    def stop(self) -> None:
        stop_proc(self.proc)


def sink_ceiling(ctx: Ctx, sink: Sink, payload_bytes: int) -> list[dict]:
    """Requests/s the sink answers for keep-alive Python clients on the other CPU (a lower bound
    of its ceiling: the client is Python too)."""
    results = []
    for conns in (8, 32):
        for rep in range(ctx.args.repeats):
            before, cpu0 = sink.count(), cpu_seconds(sink.proc.pid)
            done = subprocess.run(ctx.pinned([str(PYTHON), __file__, "client", str(sink.port), str(conns), "3",
                                              str(payload_bytes)], GATEWAY_CPU),
                                  capture_output=True, text=True, timeout=60, check=True)
            cpu1 = cpu_seconds(sink.proc.pid)
            r = json.loads(done.stdout.strip().splitlines()[-1])
            r.update(conns=conns, repeat=rep + 1, req_per_s=round(r["requests"] / r["elapsed_s"]),
                     sink_counted=sink.count() - before,
                     sink_cpu_pct=round(100 * (cpu1 - cpu0) / r["elapsed_s"], 1))
            ctx.record({"phase": "sink_ceiling", **r})
            log(f"sink ceiling: {conns} conns, run {rep + 1}: {r['req_per_s']} req/s, sink cpu {r['sink_cpu_pct']}%")
            results.append(r)
    return results


# --- the gateway ---------------------------------------------------------------------------------

def config_text(sink_port: int, max_in_flight: int, poll_interval: float) -> str:
    return f"""
[store]
synchronous = "FULL"

[plugins.viettel_his]
sending_applications = ["HIS_THU_NGHIEM"]

[outbox]
max_pending = 10000000
poll_interval_seconds = {poll_interval}

[destinations.{DEST}]
kind = "http"
url = "http://{HOST}:{sink_port}/records"
max_in_flight = {max_in_flight}
backoff_base_seconds = 0.05
backoff_cap_seconds = 0.5
response_timeout_seconds = 10
"""


class Gateway:
    def __init__(self, ctx: Ctx, data_dir: Path, config: Path, label: str, profile: Path | None = None) -> None:
        self.port = free_port()
        self.logfile = OUT / f"{ctx.stamp}-gateway-{label}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("HSSK_")}
        env["PYTHONUNBUFFERED"] = "1"
        use_cprofile = profile is not None and ctx.args.profile in ("cprofile", "both")
        prefix = [str(PYTHON)] + (["-m", "cProfile", "-o", str(profile)] if use_cprofile else [])
        cmd = prefix + ["-m", "gateway.cli", "serve", "--config", str(config), "--data-dir", str(data_dir),
                        "--mllp-listen", f"tcp:{self.port}:interface={HOST}",
                        "--http-listen", f"tcp:0:interface={HOST}"]
        with self.logfile.open("wb") as logf:
            self.proc = subprocess.Popen(ctx.pinned(cmd, GATEWAY_CPU), cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                         stdout=logf, stderr=subprocess.STDOUT)
        end = time.monotonic() + 60
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}; see {self.logfile}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"gateway did not listen within 60 s; see {self.logfile}")

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        stop_proc(self.proc, sig, timeout=120)
        return self.proc.returncode


def db_path(data_dir: Path) -> Path:
    return data_dir / "gateway.db"


def set_paused(data_dir: Path, paused: bool) -> None:
    from gateway.core.outbox import set_paused as _set_paused
    from gateway.core.store import Store
    conn = Store(db_path(data_dir)).connect()
    try:
        conn.execute("BEGIN IMMEDIATE")
        _set_paused(conn, time.time(), DEST, paused)
        conn.execute("COMMIT")
    finally:
        conn.close()


def counts(data_dir: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{db_path(data_dir)}?mode=ro", uri=True, timeout=30)
    try:
        found = dict(conn.execute("SELECT state, count(*) FROM outbox WHERE destination = ? GROUP BY state", (DEST,)))
    finally:
        conn.close()
    found["pending"] = found.get("pending", 0) + found.pop("waiting", 0)  # waiting: behind the person's earlier row
    return {s: found.get(s, 0) for s in ("pending", "in_flight", "delivered", "dead")}


def delivered_span(data_dir: Path) -> tuple[float | None, float | None]:
    conn = sqlite3.connect(f"file:{db_path(data_dir)}?mode=ro", uri=True, timeout=30)
    try:
        return conn.execute("SELECT min(delivered_at), max(delivered_at) FROM outbox WHERE state = 'delivered'").fetchone()
    finally:
        conn.close()


def write_messages(path: Path, people: int) -> None:
    """One sample message per person, each with its own CCCD (mllp-load cycles through them and
    rewrites MSH-10 of every message it sends)."""
    text = SAMPLE.read_bytes().decode("utf-8").replace("\r\n", "\n").replace("\r", "\n").strip("\n")
    assert "079085000123" in text
    path.write_text("\n\n".join(text.replace("079085000123", f"079085{p:06d}") for p in range(people)) + "\n",
                    encoding="utf-8")


def run_load(ctx: Ctx, port: int, messages_file: Path, label: str, prefix: str, *, conns: int,
             messages: int | None = None, duration: float | None = None, server_pid: int | None = None) -> dict:
    cmd = [str(LOAD), "--host", HOST, "--port", str(port), "--file", str(messages_file), "--conns", str(conns),
           "--id-prefix", prefix, "--label", label, "--timeout", "30"]
    cmd += ["--messages", str(messages)] if messages else ["--duration", f"{duration:g}"]
    cpu0 = cpu_seconds(server_pid) if server_pid else None
    done = subprocess.run(ctx.pinned(cmd, SIDE_CPU), capture_output=True, text=True, timeout=3600)
    cpu1 = cpu_seconds(server_pid) if server_pid else None
    lines = done.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"mllp-load ({label}) exited {done.returncode} without a result:\n{done.stderr}")
    result = json.loads(lines[-1])
    if cpu0 is not None and cpu1 is not None and result.get("elapsed_s"):
        result["server_cpu_pct"] = round(100 * (cpu1 - cpu0) / result["elapsed_s"], 1)
    bad = {k: result.get(k) for k in ("errors", "timeouts", "lost", "mismatches", "unsolicited", "framing_errors",
                                      "pending", "reconnects") if result.get(k)}
    accepted = result["by_code"].get("CA", 0) + result["by_code"].get("AA", 0)
    if accepted != result["sent"]:
        bad["not_accepted"] = result["sent"] - accepted
    result["problems"] = bad
    ctx.record({"phase": "mllp-load", **result})
    return result


# --- phases ----------------------------------------------------------------------------------------

def queue_snapshot(ctx: Ctx, sink: Sink, work: Path, messages_file: Path) -> tuple[Path, dict]:
    """Queue --records messages with the destination paused; return the stopped gateway's data dir."""
    data_dir = work / "snapshot"
    config = work / "queue.toml"
    config.write_text(config_text(sink.port, 8, ctx.args.poll_interval), encoding="utf-8")
    from gateway.core.store import Store
    Store(db_path(data_dir)).migrate()
    set_paused(data_dir, True)
    gw = Gateway(ctx, data_dir, config, "queue")
    try:
        log(f"queueing {ctx.args.records} records through MLLP (destination paused) ...")
        r = run_load(ctx, gw.port, messages_file, "queue", "Q", conns=ctx.args.queue_conns,
                     messages=ctx.args.records, server_pid=gw.proc.pid)
        log(f"queued: {r['acked']} ACKed at {r['msgs_per_s']:.0f} msgs/s, p99 {r['latency_ms']['p99']:.1f} ms"
            + (f"  PROBLEMS {r['problems']}" if r["problems"] else ""))
        c = counts(data_dir)
    finally:
        rc = gw.stop()
    if c["pending"] != ctx.args.records or c["delivered"] or c["in_flight"] or c["dead"] or sink.count():
        raise RuntimeError(f"expected {ctx.args.records} pending rows and nothing delivered, got {c}, "
                           f"sink saw {sink.count()}")
    conn = sqlite3.connect(f"file:{db_path(data_dir)}?mode=ro", uri=True)
    people, payload = conn.execute(
        "SELECT count(DISTINCT ordering_key), avg(length(payload)) FROM outbox").fetchone()
    conn.close()
    info = {"queue_msgs_per_s": r["msgs_per_s"], "queue_p99_ms": r["latency_ms"]["p99"], "pending": c["pending"],
            "distinct_people": people, "avg_payload_bytes": round(payload), "gateway_exit": rc,
            "db_bytes": sum(p.stat().st_size for p in data_dir.iterdir())}
    log(f"outbox holds {c['pending']} pending rows for {people} people, payload ~{round(payload)} bytes; "
        f"gateway exit {rc}")
    ctx.record({"phase": "queue", **info})
    return data_dir, info


def fresh_copy(snapshot: Path, work: Path, label: str) -> Path:
    target = work / label
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(snapshot, target)
    return target


def drain(ctx: Ctx, sink: Sink, snapshot: Path, work: Path, max_in_flight: int, label: str,
          profile: Path | None = None) -> dict:
    data_dir = fresh_copy(snapshot, work, label)
    config = work / f"{label}.toml"
    config.write_text(config_text(sink.port, max_in_flight, ctx.args.poll_interval), encoding="utf-8")
    n = ctx.args.records
    gw = Gateway(ctx, data_dir, config, label, profile)
    spy = None
    try:
        time.sleep(0.5)
        sink_before = sink.count()
        gw_cpu0, sink_cpu0 = cpu_seconds(gw.proc.pid), cpu_seconds(sink.proc.pid)
        wait0 = sched_wait_seconds(gw.proc.pid)
        set_paused(data_dir, False)
        t0 = time.monotonic()
        if profile and ctx.args.py_spy and ctx.args.profile in ("py-spy", "both"):
            spy = subprocess.Popen([ctx.args.py_spy, "record", "--nonblocking", "--threads", "--idle", "-r", "200",
                                    "--format", "raw", "-o", str(profile.with_suffix(".pyspy.txt")),
                                    "-p", str(gw.proc.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = t0 + ctx.args.drain_timeout
        c = counts(data_dir)
        while time.monotonic() < deadline:
            time.sleep(POLL_S)
            c = counts(data_dir)
            if c["pending"] == 0 and c["in_flight"] == 0:
                break
            if gw.proc.poll() is not None:
                raise RuntimeError(f"gateway exited during the drain; see {gw.logfile}")
        elapsed = time.monotonic() - t0
        gw_cpu1, sink_cpu1 = cpu_seconds(gw.proc.pid), cpu_seconds(sink.proc.pid)
        wait1 = sched_wait_seconds(gw.proc.pid)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        first, last = delivered_span(data_dir)
    finally:
        rc = gw.stop(signal.SIGINT if profile else signal.SIGTERM)
        if spy is not None and spy.poll() is None:
            spy.kill()
    complete = c["delivered"] == n and c["pending"] == 0 and c["in_flight"] == 0
    result = {
        "label": label, "max_in_flight": max_in_flight, "records": n, "complete": complete, **c,
        "elapsed_s": round(elapsed, 2), "records_per_s": round(c["delivered"] / elapsed),
        "active_records_per_s": round((c["delivered"] - 1) / (last - first)) if first and last and last > first else None,
        "sink_requests": sink.count() - sink_before,
        "gateway_cpu_pct": round(100 * (gw_cpu1 - gw_cpu0) / elapsed, 1),
        "sink_cpu_pct": round(100 * (sink_cpu1 - sink_cpu0) / elapsed, 1), "gateway_exit": rc,
        "gateway_runqueue_wait_pct": round(100 * (wait1 - wait0) / elapsed, 1),
    }
    ctx.record({"phase": "drain", **result})
    log(f"drain {label}: {c['delivered']}/{n} delivered in {elapsed:.1f} s = {result['records_per_s']} rec/s "
        f"(first..last delivery {result['active_records_per_s']} rec/s), sink saw {result['sink_requests']}, "
        f"gateway cpu {result['gateway_cpu_pct']}% (runnable but waiting for a CPU "
        f"{result['gateway_runqueue_wait_pct']}%), sink cpu {result['sink_cpu_pct']}%"
        + ("" if complete else "  INCOMPLETE"))
    shutil.rmtree(data_dir, ignore_errors=True)
    return result


def wait_for(pred, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.1)
    return False


def intake_while_draining(ctx: Ctx, sink: Sink, snapshot: Path, work: Path, messages_file: Path,
                          max_in_flight: int) -> list[dict]:
    data_dir = fresh_copy(snapshot, work, "intake")
    config = work / "intake.toml"
    config.write_text(config_text(sink.port, max_in_flight, ctx.args.poll_interval), encoding="utf-8")
    gw = Gateway(ctx, data_dir, config, "intake")
    results = []
    try:
        time.sleep(0.5)
        warm = run_load(ctx, gw.port, messages_file, "intake-warmup", "W", conns=ctx.args.intake_conns, duration=2,
                        server_pid=gw.proc.pid)
        log(f"intake warm-up (paused): {warm['msgs_per_s']:.0f} msgs/s")
        for rep in range(ctx.args.repeats):
            for mode in ("paused", "draining"):
                if mode == "draining":
                    before = counts(data_dir)["delivered"]
                    set_paused(data_dir, False)
                    if not wait_for(lambda: counts(data_dir)["delivered"] > before, ctx.args.poll_interval * 3 + 5):
                        raise RuntimeError("the drain did not start after resuming")
                else:
                    set_paused(data_dir, True)
                    # the pause takes effect at the next refresh; let in-flight deliveries settle
                    time.sleep(ctx.args.poll_interval * 2 + 0.5)
                    seen = counts(data_dir)["delivered"]
                    time.sleep(0.5)
                    if counts(data_dir)["delivered"] != seen:
                        raise RuntimeError("still delivering after the pause")
                c0, s0, sc0 = counts(data_dir), sink.count(), cpu_seconds(sink.proc.pid)
                r = run_load(ctx, gw.port, messages_file, f"intake-{mode}-{rep + 1}", f"I{rep}{mode[0]}",
                             conns=ctx.args.intake_conns, duration=ctx.args.intake_duration, server_pid=gw.proc.pid)
                c1, s1, sc1 = counts(data_dir), sink.count(), cpu_seconds(sink.proc.pid)
                entry = {"mode": mode, "repeat": rep + 1, "msgs_per_s": round(r["msgs_per_s"]),
                         "p50_ms": r["latency_ms"]["p50"], "p99_ms": r["latency_ms"]["p99"],
                         "gateway_cpu_pct": r.get("server_cpu_pct"),
                         "sink_cpu_pct": round(100 * (sc1 - sc0) / r["elapsed_s"], 1),
                         "delivered_per_s": round((c1["delivered"] - c0["delivered"]) / r["elapsed_s"]),
                         "sink_req_per_s": round((s1 - s0) / r["elapsed_s"]),
                         "backlog_left": c1["pending"] + c1["in_flight"], "problems": r["problems"]}
                if mode == "draining" and entry["backlog_left"] == 0:
                    entry["problems"] = {**entry["problems"], "drain_finished_during_run": True}
                ctx.record({"phase": "intake", "max_in_flight": max_in_flight, **entry})
                log(f"intake {mode} #{rep + 1}: {entry['msgs_per_s']} msgs/s p99 {entry['p99_ms']:.1f} ms, "
                    f"delivered {entry['delivered_per_s']}/s, backlog {entry['backlog_left']}"
                    + (f"  PROBLEMS {entry['problems']}" if entry["problems"] else ""))
                results.append(entry)
    finally:
        gw.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
    return results


def summarise_profile(profile: Path) -> Path:
    import pstats
    text = OUT / f"{profile.stem}.txt"
    with text.open("w") as f:
        stats = pstats.Stats(str(profile), stream=f)
        stats.strip_dirs()
        f.write("=== by tottime ===\n")
        stats.sort_stats("tottime").print_stats(40)
        f.write("=== by cumulative ===\n")
        stats.sort_stats("cumulative").print_stats(60)
    return text


def summarise_py_spy(raw: Path, top: int = 40) -> Path:
    """Per thread: share of samples busy (not idle), and the busiest leaf frames and functions."""
    from collections import Counter
    threads, busy, leaf, incl = Counter(), Counter(), Counter(), Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1]
        threads[thread] += int(n)
        idle = frames[-1].split(" (")[0] in ("Condition.wait", "JournalWriter._run", "EPollReactor.doPoll",
                                             "Intake._work_loop", "Queue.get", "SimpleQueue.get")
        if idle:
            continue
        busy[thread] += int(n)
        leaf[(thread, frames[-1])] += int(n)
        for frame in set(frames[1:]):
            if "gateway/" in frame or "twisted/web" in frame or "idna" in frame or "sqlite" in frame:
                incl[(thread, frame)] += int(n)
    text = raw.with_suffix(".summary.txt")
    with text.open("w") as f:
        f.write("thread: busy samples / all samples\n")
        for thread, n in threads.most_common():
            f.write(f"  {thread}: {busy[thread]} / {n} = {100 * busy[thread] / n:.0f}% busy\n")
        f.write("\nbusiest leaf frames (share of that thread's samples)\n")
        for (thread, frame), n in leaf.most_common(top):
            f.write(f"  {100 * n / threads[thread]:5.1f}% {thread}: {frame}\n")
        f.write("\ninclusive, gateway / twisted.web / idna / sqlite frames (share of that thread's samples)\n")
        for (thread, frame), n in incl.most_common(top * 2):
            f.write(f"  {100 * n / threads[thread]:5.1f}% {thread}: {frame}\n")
    return text


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sink"]:
        serve_sink()
        return 0
    if argv[:1] == ["client"]:
        run_client(int(argv[1]), int(argv[2]), float(argv[3]), int(argv[4]))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, default=100000, help="rows to queue and drain (default 100000)")
    p.add_argument("--people", type=int, default=1000, help="distinct CCCDs the messages cycle through (default 1000)")
    p.add_argument("--max-in-flight", type=int, nargs="+", default=[8, 32, 64], help="values to drain with")
    p.add_argument("--repeats", type=int, default=2, help="runs per measurement (default 2)")
    p.add_argument("--queue-conns", type=int, default=16, help="mllp-load connections while queueing (default 16)")
    p.add_argument("--intake-duration", type=float, default=10.0, help="seconds per intake run (default 10; 0 skips)")
    p.add_argument("--intake-conns", type=int, default=8, help="mllp-load connections for intake runs (default 8)")
    p.add_argument("--intake-max-in-flight", type=int, default=None, help="default: the largest --max-in-flight")
    p.add_argument("--poll-interval", type=float, default=1.0, help="[outbox] poll_interval_seconds (default 1.0)")
    p.add_argument("--drain-timeout", type=float, default=600.0, help="give up a drain after this (default 600 s)")
    p.add_argument("--profile", choices=("cprofile", "py-spy", "both"), default=None,
                   help="one more drain under cProfile (reactor thread only) and/or py-spy (all threads, if found)")
    p.add_argument("--skip-drain", action="store_true", help="only the sink ceiling, queueing and intake runs")
    p.add_argument("--no-taskset", action="store_true")
    p.add_argument("--json", action="store_true", help="print one JSON summary instead of the tables")
    args = p.parse_args(argv)
    py_spy = shutil.which("py-spy") or (str(REPO / ".venv" / "bin" / "py-spy")
                                        if os.access(REPO / ".venv" / "bin" / "py-spy", os.X_OK) else None)
    args.py_spy = py_spy

    build_load()
    OUT.mkdir(parents=True, exist_ok=True)
    ctx = Ctx(args)
    log(f"taskset: {'gateway on CPU 1, sink + mllp-load on CPU 0' if ctx.taskset else 'not used'}; raw: {ctx.raw}")
    work = Path(tempfile.mkdtemp(prefix="hssk-drain-"))
    sink = None
    summary: dict = {"records": args.records, "people": args.people, "taskset": ctx.taskset, "raw": str(ctx.raw)}
    try:
        messages_file = work / "people.hl7"
        write_messages(messages_file, args.people)
        sink = Sink(ctx)
        log(f"sink on {HOST}:{sink.port}")
        snapshot, summary["queue"] = None, None
        snapshot, summary["queue"] = queue_snapshot(ctx, sink, work, messages_file)
        summary["sink_ceiling"] = sink_ceiling(ctx, sink, summary["queue"]["avg_payload_bytes"])
        summary["drains"] = []
        if not args.skip_drain:
            for m in args.max_in_flight:
                for rep in range(args.repeats):
                    summary["drains"].append(drain(ctx, sink, snapshot, work, m, f"mif{m}-run{rep + 1}"))
        intake_mif = args.intake_max_in_flight or max(args.max_in_flight)
        summary["intake_max_in_flight"] = intake_mif
        summary["intake"] = (intake_while_draining(ctx, sink, snapshot, work, messages_file, intake_mif)
                             if args.intake_duration > 0 else [])
        if args.profile:
            prof = OUT / f"{ctx.stamp}-drain-mif{intake_mif}.prof"
            summary["profile_drain"] = drain(ctx, sink, snapshot, work, intake_mif, f"profile-mif{intake_mif}", prof)
            summary["profile"] = str(summarise_profile(prof)) if prof.exists() else None
            spy = prof.with_suffix(".pyspy.txt")
            summary["py_spy"] = str(summarise_py_spy(spy)) if spy.exists() else None
    finally:
        if sink is not None:
            sink.stop()
        shutil.rmtree(work, ignore_errors=True)

    if args.json:
        print(json.dumps(summary))
        return 0
    q = summary["queue"]
    print(f"outbox drain, {args.records} records for {q['distinct_people']} people (payload ~{q['avg_payload_bytes']} B), "
          f"taskset {'on' if ctx.taskset else 'off'}, synchronous=FULL; raw: {ctx.raw.relative_to(REPO)}")
    print(f"queueing (paused): {q['queue_msgs_per_s']:.0f} msgs/s, p99 {q['queue_p99_ms']:.1f} ms")
    print("sink ceiling (Python keep-alive clients, lower bound): " + ", ".join(
        f"{r['conns']} conns {r['req_per_s']} req/s (sink cpu {r['sink_cpu_pct']:.0f}%)" for r in summary["sink_ceiling"]))
    if summary["drains"]:
        print(f"{'max_in_flight':>13} | {'run':>3} | {'records/s':>9} {'active/s':>8} {'seconds':>7} | "
              f"{'gw cpu%':>7} {'gw wait%':>8} {'sink cpu%':>9} | ok")
        for d in summary["drains"]:
            print(f"{d['max_in_flight']:>13} | {d['label'][-1]:>3} | {d['records_per_s']:>9} "
                  f"{d['active_records_per_s'] or 0:>8} {d['elapsed_s']:>7.1f} | {d['gateway_cpu_pct']:>7.0f} "
                  f"{d['gateway_runqueue_wait_pct']:>8.0f} "
                  f"{d['sink_cpu_pct']:>9.0f} | {'yes' if d['complete'] and d['sink_requests'] >= d['records'] else 'NO'}")
        print("records/s = records / (resume .. last poll seeing the outbox empty, incl. up to one poll_interval "
              "before the gateway notices); active/s = between the first and last delivered_at")
    if summary["intake"]:
        print(f"intake, {args.intake_conns} conns, {args.intake_duration:g} s per run, max_in_flight "
              f"{summary['intake_max_in_flight']}:")
        print(f"{'mode':>8} | {'run':>3} | {'msgs/s':>6} {'p50':>6} {'p99':>6} | {'delivered/s':>11} {'gw cpu%':>7} | problems")
        for e in summary["intake"]:
            print(f"{e['mode']:>8} | {e['repeat']:>3} | {e['msgs_per_s']:>6} {e['p50_ms']:>6.2f} {e['p99_ms']:>6.2f} | "
                  f"{e['delivered_per_s']:>11} {e['gateway_cpu_pct'] or 0:>7.0f} | {e['problems'] or '-'}")
        for rep in range(args.repeats):
            pair = {e["mode"]: e for e in summary["intake"] if e["repeat"] == rep + 1}
            if len(pair) == 2 and pair["paused"]["msgs_per_s"]:
                print(f"run {rep + 1}: intake while draining / paused = "
                      f"{pair['draining']['msgs_per_s'] / pair['paused']['msgs_per_s']:.2f}, p99 "
                      f"{pair['paused']['p99_ms']:.1f} -> {pair['draining']['p99_ms']:.1f} ms")
    if summary.get("profile"):
        print(f"profile: {summary['profile']}" + (f"; py-spy: {summary['py_spy']}" if summary.get("py_spy") else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
