"""MLLP throughput benchmark: the HSSK gateway against a python-hl7 asyncio peer.

    .venv/bin/python bench/mllp_throughput.py [--duration 10] [--conns 1 8 32] [--json]

Builds bench/out/mllp-load from bench/mllp-load.c if needed (`make bench/out/mllp-load`), starts the gateway (fresh temp data dir,
synchronous=FULL) and then bench/hl7_asyncio_baseline.py, and drives each with mllp-load
(adt_a04.hl7, window 1) at every --conns value after a short warm-up. With taskset the
server runs on CPU 1 and the generator on CPU 0. Everything stays on 127.0.0.1. Raw
mllp-load JSON lines and the server logs go to bench/out/. See bench/README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out"
LOAD = OUT / "mllp-load"
MESSAGE = REPO / "tests" / "messages" / "adt_a04.hl7"
VENV_BIN = REPO / ".venv" / "bin"
HOST = "127.0.0.1"
ACCEPT_CODES = {"gateway": ("CA", "AA"), "baseline": ("AA",), "floor": ("AA",), "floor-journal": ("AA",)}
FLOORS = ("floor", "floor-journal")
SERVER_CPU, LOAD_CPU = "1", "0"
WARMUP_S = 2.0


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def build_load() -> None:
    """The load generator, built by the Makefile's rule from the copy of its source in bench/, so
    a clone of the repository benchmarks on its own; make does nothing when it is up to date."""
    subprocess.run(["make", "--no-print-directory", "-C", str(REPO), str(LOAD.relative_to(REPO))], check=True,
                   stdout=sys.stderr)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def pinned(cmd: list[str], cpu: str, use_taskset: bool) -> list[str]:
    return ["taskset", "-c", cpu, *cmd] if use_taskset else cmd


def wait_for_port(port: int, proc: subprocess.Popen, logfile: Path, limit: float = 30.0) -> None:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening; see {logfile}:\n"
                               + logfile.read_text(errors="replace")[-2000:])
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server did not accept connections on {HOST}:{port} within {limit:.0f} s; see {logfile}")


def cpu_seconds(pid: int) -> float | None:
    """utime+stime of the whole process (all threads), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def run_load(port: int, conns: int, duration: float, label: str, use_taskset: bool,
             server_pid: int, raw: Path, message: Path = MESSAGE, extra: tuple[str, ...] = ()) -> dict:
    """One mllp-load run; ``extra`` are more mllp-load options (``--rate``, ``--id-prefix``)."""
    cmd = pinned([str(LOAD), "--host", HOST, "--port", str(port), "--file", str(message),
                  "--conns", str(conns), "--duration", f"{duration:g}", "--label", label, *extra], LOAD_CPU,
                 use_taskset)
    cpu0 = cpu_seconds(server_pid)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
    cpu1 = cpu_seconds(server_pid)
    line = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    try:
        result = json.loads(line)
    except json.JSONDecodeError:
        raise RuntimeError(f"mllp-load ({label}) exited {done.returncode} without a JSON result:\n{done.stderr}")
    with raw.open("a") as f:
        f.write(line + "\n")
    if cpu0 is not None and cpu1 is not None and result.get("elapsed_s"):
        result["server_cpu_pct"] = round(100 * (cpu1 - cpu0) / result["elapsed_s"], 1)
    result["exit_status"] = done.returncode
    return result


def check(result: dict, server: str) -> list[str]:
    """Problems with one run: anything not answered with an accepting code."""
    problems = []
    accepted = sum(result["by_code"].get(c, 0) for c in ACCEPT_CODES[server])
    if accepted != result["sent"]:
        others = {k: v for k, v in result["by_code"].items() if v and k not in ACCEPT_CODES[server]}
        problems.append(f"{accepted}/{result['sent']} accepted ({'/'.join(ACCEPT_CODES[server])}); other codes {others}")
    for key in ("errors", "timeouts", "lost", "mismatches", "unsolicited", "framing_errors", "pending", "reconnects"):
        if result.get(key):
            problems.append(f"{key}={result[key]}")
    if result.get("deadline_hit"):
        problems.append("deadline_hit")
    return problems


def pause_destinations(data_dir: str, env: dict[str, str]) -> None:
    """Create the journal and pause every configured destination, so rows are still rendered and
    queued with each commit but nothing is delivered: the run measures intake alone."""
    sys.path.insert(0, str(REPO))
    from gateway.config import load_config
    from gateway.core.store import Store

    config = load_config(REPO / "config" / "gateway.toml", environ=env)
    Store(Path(data_dir) / "gateway.db", config.store.synchronous).migrate()
    for destination in config.destinations:
        if destination.enabled:
            subprocess.run([str(VENV_BIN / "hssk-gateway"), "outbox", "pause", destination.name, "--config",
                            str(REPO / "config" / "gateway.toml"), "--data-dir", data_dir],
                           check=True, env=env, stdout=subprocess.DEVNULL)


def bench_server(name: str, conns_list: list[int], duration: float, use_taskset: bool,
                 stamp: str, raw: Path, extra_env: dict[str, str] | None = None,
                 paused: bool = False, cpus: str = SERVER_CPU, message: Path = MESSAGE) -> dict[int, dict]:
    port = free_port()
    logfile = OUT / f"{stamp}-{name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSSK_")}
    tmp = None
    if name == "gateway":
        tmp = tempfile.mkdtemp(prefix="hssk-bench-")
        env["HSSK_STORE__SYNCHRONOUS"] = "FULL"
        env.update(extra_env or {})
        if paused:
            pause_destinations(tmp, env)
        cmd = [str(VENV_BIN / "hssk-gateway"), "serve", "--config", str(REPO / "config" / "gateway.toml"),
               "--data-dir", tmp, "--mllp-listen", f"tcp:{port}:interface={HOST}",
               "--http-listen", f"tcp:0:interface={HOST}"]
    elif name in FLOORS:
        cmd = [str(VENV_BIN / "python"), str(REPO / "bench" / "mllp_floor.py"), str(port)]
        if name == "floor-journal":
            tmp = tempfile.mkdtemp(prefix="hssk-floor-")
            cmd += ["--journal", tmp]
    else:
        cmd = [str(VENV_BIN / "python"), str(REPO / "bench" / "hl7_asyncio_baseline.py"), str(port)]
    proc = None
    results: dict[int, dict] = {}
    try:
        with logfile.open("wb") as logf:
            proc = subprocess.Popen(pinned(cmd, cpus, use_taskset), cwd=REPO, env=env,
                                    stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT)
        wait_for_port(port, proc, logfile)
        log(f"{name}: pid {proc.pid} on {HOST}:{port}" + (f", data dir {tmp}" if tmp else ""))
        warm = run_load(port, max(conns_list), min(WARMUP_S, duration), f"{name}-warmup", use_taskset, proc.pid, raw,
                        message)
        log(f"{name}: warm-up {warm['msgs_per_s']:.0f} msgs/s")
        for conns in conns_list:
            r = run_load(port, conns, duration, f"{name}-c{conns}", use_taskset, proc.pid, raw, message)
            r["problems"] = check(r, name)
            results[conns] = r
            log(f"{name}: conns={conns} {r['msgs_per_s']:.0f} msgs/s p99 {r['latency_ms']['p99']:.2f} ms"
                + (f"  PROBLEMS: {'; '.join(r['problems'])}" if r["problems"] else ""))
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode} during the run; see {logfile}")
    finally:
        stop(proc)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return results


def codes(r: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in r["by_code"].items() if v) or "-"


def table(conns_list: list[int], gw: dict[int, dict], base: dict[int, dict]) -> str:
    head = (f"{'conns':>5} | {'gw msgs/s':>9} {'gw p50':>7} {'gw p99':>7} {'gw cpu%':>7} | "
            f"{'base msgs/s':>11} {'base p99':>8} {'base cpu%':>9} | {'ratio':>5} | by_code gw / base")
    lines = [head, "-" * len(head)]
    for c in conns_list:
        g, b = gw[c], base[c]
        ratio = g["msgs_per_s"] / b["msgs_per_s"] if b["msgs_per_s"] else float("nan")
        lines.append(f"{c:>5} | {g['msgs_per_s']:>9.0f} {g['latency_ms']['p50']:>7.2f} {g['latency_ms']['p99']:>7.2f} "
                     f"{g.get('server_cpu_pct', float('nan')):>7.0f} | {b['msgs_per_s']:>11.0f} "
                     f"{b['latency_ms']['p99']:>8.2f} {b.get('server_cpu_pct', float('nan')):>9.0f} | "
                     f"{ratio:>5.2f} | {codes(g)} / {codes(b)}")
    problems = [f"  {name} conns={c}: {'; '.join(r['problems'])}"
                for name, res in (("gateway", gw), ("baseline", base)) for c, r in res.items() if r["problems"]]
    lines.append("latency in ms; cpu% = server CPU time / elapsed (100 = one core); ratio = gateway/baseline msgs/s")
    lines.append("checks: all ACKs accepted (gateway CA/AA, baseline AA), no errors/timeouts/lost/mismatches"
                 if not problems else "PROBLEMS:\n" + "\n".join(problems))
    return "\n".join(lines)


def floor_table(conns_list: list[int], gw: dict[int, dict], floors: dict[str, dict[int, dict]]) -> str:
    """The gateway beside what Twisted alone (``floor``) and Twisted plus the commit
    (``floor-journal``) do on the same machine and pinning: see bench/mllp_floor.py."""
    head = (f"{'conns':>5} | {'floor msgs/s':>12} {'p99':>6} | {'floor+journal msgs/s':>20} {'p99':>6} | "
            f"{'gw / floor+journal':>18}")
    lines = [head, "-" * len(head)]
    for c in conns_list:
        bare, journal = floors["floor"][c], floors["floor-journal"][c]
        share = gw[c]["msgs_per_s"] / journal["msgs_per_s"] if journal["msgs_per_s"] else float("nan")
        lines.append(f"{c:>5} | {bare['msgs_per_s']:>12.0f} {bare['latency_ms']['p99']:>6.2f} | "
                     f"{journal['msgs_per_s']:>20.0f} {journal['latency_ms']['p99']:>6.2f} | {share:>18.2f}")
    problems = [f"  {name} conns={c}: {'; '.join(r['problems'])}"
                for name, res in floors.items() for c, r in res.items() if r["problems"]]
    if problems:
        lines.append("PROBLEMS:\n" + "\n".join(problems))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measured run (default 10)")
    p.add_argument("--conns", type=int, nargs="+", default=[1, 8, 32], help="connection counts (default 1 8 32)")
    p.add_argument("--json", action="store_true", help="print one JSON summary instead of the table")
    p.add_argument("--env", action="append", default=[], metavar="HSSK_KEY=VALUE",
                   help="extra environment for the gateway (repeatable), e.g. HSSK_PIPELINE__WORKERS=1")
    p.add_argument("--pause-delivery", action="store_true",
                   help="pause every destination before the gateway starts: rows are rendered and queued, "
                        "not delivered, so the run measures intake alone")
    p.add_argument("--no-baseline", action="store_true", help="measure the gateway only")
    p.add_argument("--gateway-cpus", default=SERVER_CPU, metavar="LIST",
                   help=f"taskset CPU list for the gateway and its child processes (default {SERVER_CPU}; the peers "
                        f"stay on CPU {SERVER_CPU}), e.g. 0,1 with HSSK_PIPELINE__ISOLATION=processes")
    p.add_argument("--floors", action="store_true",
                   help="also measure bench/mllp_floor.py: Twisted answering without any work, and with only "
                        "the SQLite group commit, to show what the stack leaves for the gateway's own work")
    p.add_argument("--file", type=Path, default=MESSAGE,
                   help="the HL7 message every server is sent (default tests/messages/adt_a04.hl7), e.g. "
                        "tests/messages/oru_r01.hl7 for a 3.4 KB result")
    args = p.parse_args(argv)
    if args.duration <= 0 or any(c < 1 for c in args.conns):
        p.error("--duration and --conns must be positive")
    if any("=" not in e or not e.startswith("HSSK_") for e in args.env):
        p.error("--env takes HSSK_KEY=VALUE")
    extra_env = dict(e.split("=", 1) for e in args.env)

    build_load()
    OUT.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    raw = OUT / f"{stamp}-mllp-load.jsonl"
    use_taskset = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    pinning = f"gateway on CPU {args.gateway_cpus}, peers on CPU {SERVER_CPU}, generator on CPU {LOAD_CPU}"
    log(f"taskset: {pinning if use_taskset else 'not used'}; raw results: {raw}")

    gw = bench_server("gateway", args.conns, args.duration, use_taskset, stamp, raw, extra_env, args.pause_delivery,
                      args.gateway_cpus, args.file)
    if args.no_baseline:
        empty = {"msgs_per_s": 0.0, "latency_ms": {"p50": float("nan"), "p99": float("nan")}, "by_code": {},
                 "problems": []}
        base = {c: dict(empty) for c in args.conns}
    else:
        base = bench_server("baseline", args.conns, args.duration, use_taskset, stamp, raw, message=args.file)
    floors = {name: bench_server(name, args.conns, args.duration, use_taskset, stamp, raw, message=args.file)
              for name in FLOORS} if args.floors else {}
    ok = not any(r["problems"] for res in (gw, base, *floors.values()) for r in res.values())

    if args.json:
        print(json.dumps({
            "duration_s": args.duration, "message": args.file.name, "taskset": use_taskset, "raw": str(raw), "ok": ok,
            "runs": [{"conns": c,
                      "gateway": {k: gw[c].get(k) for k in ("msgs_per_s", "latency_ms", "by_code", "errors", "timeouts",
                                                             "lost", "mismatches", "server_cpu_pct", "problems")},
                      "baseline": {k: base[c].get(k) for k in ("msgs_per_s", "latency_ms", "by_code", "errors",
                                                                "timeouts", "lost", "mismatches", "server_cpu_pct",
                                                                "problems")},
                      "ratio": round(gw[c]["msgs_per_s"] / base[c]["msgs_per_s"], 3) if base[c]["msgs_per_s"] else None,
                      **{name: {k: res[c].get(k) for k in ("msgs_per_s", "latency_ms", "server_cpu_pct", "problems")}
                         for name, res in floors.items()}}
                     for c in args.conns]}))
    else:
        print(f"MLLP throughput, {args.file.name}, window 1, {args.duration:g} s per run, "
              f"taskset {'on' if use_taskset else 'off'}; raw: {raw.relative_to(REPO)}")
        print(table(args.conns, gw, base))
        if floors:
            print(floor_table(args.conns, gw, floors))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
