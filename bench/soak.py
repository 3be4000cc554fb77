"""Soak: the gateway at a steady share of its measured maximum for a long time; does its memory
stay flat and its p99 steady?

    .venv/bin/python bench/soak.py                              # 30 min at half the measured maximum
    .venv/bin/python bench/soak.py --duration 120 --window 20   # a quick look
    .venv/bin/python bench/soak.py --rate 400 --json            # a fixed rate, JSON summary

A script, not a test: it runs for half an hour. Starts the gateway as `bench/mllp_throughput.py`
does (`config/gateway.toml`, a fresh temp data dir, synchronous=FULL, pinned to CPU 1, delivery to
`local_files` on unless --pause-delivery), measures its maximum with mllp-load at --conns for
--probe seconds (unless --rate is given), then sends at --share of it with `mllp-load --rate`, one
run per --window seconds, and after each window reads the gateway's resident memory (VmRSS of
the process and its children, from /proc). See bench/README.md.

Passes when every message got an accepting answer, the resident memory at the end is within
--max-rss-growth (10 %) of the first window's, and the median p99 of the last third of the
windows is within --max-p99-drift (1.5x) of the first third's.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mllp_throughput import (HOST, MESSAGE, OUT, REPO, SERVER_CPU, VENV_BIN, build_load, check,  # noqa: E402
                             free_port, log, pause_destinations, pinned, run_load, stop, wait_for_port)


def resident_kib(pid: int) -> int:
    """VmRSS of ``pid`` and of its children (pipeline processes with isolation = "processes")."""
    total = 0
    pids = [pid]
    try:
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def load_run(port: int, conns: int, duration: float, rate: float, label: str, use_taskset: bool, message: Path,
             raw: Path, server_pid: int) -> dict:
    """One window (or the probe): mllp-load at ``rate`` (0: as fast as answered), its own id prefix
    so no window's control ids repeat another's."""
    extra = ("--id-prefix", label.replace("-", "")[:10]) + (("--rate", f"{rate:g}") if rate else ())
    return run_load(port, conns, duration, label, use_taskset, server_pid, raw, message, extra)


def verdict(windows: list[dict], max_rss_growth: float, max_p99_drift: float) -> dict:
    rss_first, rss_last = windows[0]["rss_kib"], windows[-1]["rss_kib"]
    third = max(1, len(windows) // 3)
    p99_first = statistics.median(w["p99_ms"] for w in windows[:third])
    p99_last = statistics.median(w["p99_ms"] for w in windows[-third:])
    problems = [f"window {w['window']}: {p}" for w in windows for p in w["problems"]]
    growth = rss_last / rss_first - 1
    drift = p99_last / p99_first if p99_first else float("inf")
    if growth > max_rss_growth:
        problems.append(f"resident memory grew {growth:.1%} (first window {rss_first} KiB, last {rss_last} KiB), "
                        f"more than {max_rss_growth:.0%}")
    if drift > max_p99_drift:
        problems.append(f"p99 drifted {drift:.2f}x (first third {p99_first:.2f} ms, last third {p99_last:.2f} ms), "
                        f"more than {max_p99_drift:g}x")
    return {"rss_growth": round(growth, 4), "p99_first_third_ms": p99_first, "p99_last_third_ms": p99_last,
            "p99_drift": round(drift, 3), "problems": problems, "ok": not problems}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=1800.0, help="seconds of soak (default 1800)")
    p.add_argument("--window", type=float, default=60.0, help="seconds per measured window (default 60)")
    p.add_argument("--conns", type=int, default=8, help="connections, window 1 each (default 8)")
    p.add_argument("--rate", type=float, default=0.0, help="messages/s to send; default: --share of the probe")
    p.add_argument("--share", type=float, default=0.5, help="share of the measured maximum to send (default 0.5)")
    p.add_argument("--probe", type=float, default=10.0, help="seconds of the maximum-rate probe (default 10)")
    p.add_argument("--file", type=Path, default=MESSAGE, help="the HL7 message sent (default the ADT^A04 sample)")
    p.add_argument("--pause-delivery", action="store_true", help="queue rows but deliver nothing (intake alone)")
    p.add_argument("--env", action="append", default=[], metavar="HSSK_KEY=VALUE",
                   help="extra environment for the gateway (repeatable)")
    p.add_argument("--max-rss-growth", type=float, default=0.10, help="allowed growth of resident memory (0.10)")
    p.add_argument("--max-p99-drift", type=float, default=1.5, help="allowed last-third/first-third p99 (1.5)")
    p.add_argument("--json", action="store_true", help="print one JSON summary on stdout")
    args = p.parse_args(argv)
    if args.window <= 0 or args.duration < args.window or args.conns < 1:
        p.error("--window must be positive, --duration at least one window, --conns at least 1")
    if any("=" not in e or not e.startswith("HSSK_") for e in args.env):
        p.error("--env takes HSSK_KEY=VALUE")

    build_load()
    OUT.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    raw = OUT / f"{stamp}-soak.jsonl"
    use_taskset = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    port = free_port()
    data_dir = tempfile.mkdtemp(prefix="hssk-soak-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSSK_")}
    env["HSSK_STORE__SYNCHRONOUS"] = "FULL"
    env.update(dict(e.split("=", 1) for e in args.env))
    if args.pause_delivery:
        pause_destinations(data_dir, env)
    logfile = OUT / f"{stamp}-soak-gateway.log"
    cmd = [str(VENV_BIN / "hssk-gateway"), "serve", "--config", str(REPO / "config" / "gateway.toml"),
           "--data-dir", data_dir, "--mllp-listen", f"tcp:{port}:interface={HOST}",
           "--http-listen", f"tcp:0:interface={HOST}"]
    proc = None
    windows: list[dict] = []
    try:
        with logfile.open("wb") as logf:
            proc = subprocess.Popen(pinned(cmd, SERVER_CPU, use_taskset), cwd=REPO, env=env,
                                    stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
        wait_for_port(port, proc, logfile)
        log(f"gateway: pid {proc.pid} on {HOST}:{port}, data dir {data_dir}; raw results: {raw}")
        rate, probe = args.rate, None
        if not rate:
            probe = load_run(port, args.conns, args.probe, 0, "soak-probe", use_taskset, args.file, raw, proc.pid)
            rate = round(probe["msgs_per_s"] * args.share, 1)
            log(f"probe: {probe['msgs_per_s']:.0f} msgs/s at {args.conns} connections, p99 "
                f"{probe['latency_ms']['p99']:.2f} ms; soaking at {rate:g} msgs/s")
        started = time.monotonic()
        n = 0
        while time.monotonic() - started + args.window <= args.duration + 1:
            n += 1
            r = load_run(port, args.conns, args.window, rate, f"soak-w{n}", use_taskset, args.file, raw, proc.pid)
            if proc.poll() is not None:
                raise RuntimeError(f"the gateway exited with {proc.returncode}; see {logfile}")
            window = {"window": n, "at_s": round(time.monotonic() - started), "msgs_per_s": r["msgs_per_s"],
                      "p50_ms": r["latency_ms"]["p50"], "p99_ms": r["latency_ms"]["p99"],
                      "rss_kib": resident_kib(proc.pid), "problems": check(r, "gateway")}
            windows.append(window)
            log(f"window {n}: {window['msgs_per_s']:.0f} msgs/s p50 {window['p50_ms']:.2f} ms p99 "
                f"{window['p99_ms']:.2f} ms rss {window['rss_kib'] / 1024:.1f} MiB"
                + (f"  PROBLEMS: {'; '.join(window['problems'])}" if window["problems"] else ""))
    finally:
        stop(proc)
        shutil.rmtree(data_dir, ignore_errors=True)
    result = {"rate": rate, "conns": args.conns, "message": args.file.name, "window_s": args.window,
              "probe_msgs_per_s": probe["msgs_per_s"] if probe else None, "windows": windows,
              **verdict(windows, args.max_rss_growth, args.max_p99_drift)}
    with raw.open("a") as f:
        f.write(json.dumps({"summary": result}) + "\n")
    if args.json:
        print(json.dumps(result))
    else:
        print(f"soak: {len(windows)} windows of {args.window:g} s at {rate:g} msgs/s, {args.conns} connections, "
              f"{args.file.name}; resident memory {windows[0]['rss_kib'] / 1024:.1f} -> "
              f"{windows[-1]['rss_kib'] / 1024:.1f} MiB ({result['rss_growth']:+.1%}); p99 first third "
              f"{result['p99_first_third_ms']:.2f} ms, last third {result['p99_last_third_ms']:.2f} ms "
              f"({result['p99_drift']:.2f}x)")
        print("ok" if result["ok"] else "PROBLEMS:\n  " + "\n  ".join(result["problems"]))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
