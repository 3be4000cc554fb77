"""XML 130 intake benchmark: files/s and latency of ``POST /xml130`` for a typical file.

    .venv/bin/python bench/xml_intake.py [--duration 10] [--clients 1 8 32] [--warmup 2] [--json]

1. Starts the gateway in a subprocess (this file, ``serve`` mode) with a temp data dir, the
   store's default ``synchronous=FULL``, HTTP on a free port of 127.0.0.1 and one ``file``
   destination (JSON) in the temp dir, so every accepted file is also rendered, queued and
   written out while the run goes on. The subprocess registers a document plugin that claims
   facility 79025 and keeps the record sets as read — the vendor plugins' own profile work is
   not measured, the core's is: safe parse of the outer file and its base64 tables, validation,
   policy hook, JSON rendering, group commit.
2. Sends ``plugins/vnpt_his/samples/xml4750_noi_tru.xml`` (one inpatient episode: XML1, 20 drug
   lines, 30 service lines, XML4, XML5, XML14; 120 kB) with a distinct MA_LK in every table of
   every request, so no request is a duplicate, from N concurrent keep-alive HTTP/1.1 clients,
   each waiting for its answer before sending the next: a warm-up at the largest N (not
   reported), then ``--duration`` s per N.
3. Prints files/s (200 "accepted" answers per second), p50/p99 latency from request sent to
   answer read, and the answers that were not 200.

With taskset and >= 2 CPUs the gateway runs on CPU 1 and the clients on CPU 0. Everything is on
127.0.0.1; the temp dir is removed at the end.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from gateway.model.hooks import hookimpl  # noqa: E402  (after the path insert, for a checkout without install)

SAMPLE = REPO / "plugins" / "vnpt_his" / "samples" / "xml4750_noi_tru.xml"
SAMPLE_MA_LK = b"79025.2024070100123"
PYTHON = REPO / ".venv" / "bin" / "python"
HOST = "127.0.0.1"
GATEWAY_CPU, CLIENT_CPU = "1", "0"


# --- the gateway subprocess -------------------------------------------------------------------


class _KeepRecordsAdapter:
    name = "bench_xml"

    def normalize(self, document):
        return document.records


class BenchDocumentPlugin:
    """Claims the sample's facility, 79025, and nothing else."""

    @hookimpl
    def hssk_identify_document(self, document, envelope):
        return _KeepRecordsAdapter() if document.facility == "79025" else None


def serve(data_dir: str, port_file: str) -> None:
    from twisted.internet import reactor

    from gateway.app import Gateway
    from gateway.config import load_config
    from gateway.core.plugins import build_plugin_manager
    from gateway.logs import start_logging

    config = load_config(environ=os.environ, overrides={
        "data_dir": data_dir, "http.listen": f"tcp:0:interface={HOST}", "mllp.listen": f"tcp:0:interface={HOST}",
        "destinations": {"files": {"kind": "file", "format": "json", "directory": str(Path(data_dir) / "drop")}}})
    start_logging(config.log_format)
    gateway = Gateway(config, reactor, plugins=build_plugin_manager(config, extra=[BenchDocumentPlugin()],
                                                                  load_entry_points=False))

    def started(_):
        Path(port_file).write_text(str(gateway.address("http")[1]))

    def failed(failure):
        print(f"gateway did not start: {failure.getErrorMessage()}", file=sys.stderr)
        reactor.stop()

    gateway.start().addCallbacks(started, failed)
    reactor.addSystemEventTrigger("before", "shutdown", gateway.stop)
    reactor.run()


# --- the load ---------------------------------------------------------------------------------


class Bodies:
    """The sample split around its base64 tables, so a body with a new MA_LK costs a replace and
    a base64 encode per table instead of an XML parse."""

    def __init__(self, sample: bytes) -> None:
        from lxml import etree

        root = etree.fromstring(sample)
        self.tables = []
        for n, file in enumerate(root.iter("FILEHOSO")):
            node = file.find("NOIDUNGFILE")
            self.tables.append(base64.b64decode(node.text))
            node.text = f"@@TABLE{n}@@"
        outer = etree.tostring(root, xml_declaration=True, encoding="utf-8")
        self.pieces = []
        for n in range(len(self.tables)):
            head, outer = outer.split(f"@@TABLE{n}@@".encode(), 1)
            self.pieces.append(head)
        self.tail = outer

    def body(self, ma_lk: bytes) -> bytes:
        parts = []
        for head, table in zip(self.pieces, self.tables):
            parts += (head, base64.b64encode(table.replace(SAMPLE_MA_LK, ma_lk)))
        parts.append(self.tail)
        return b"".join(parts)


async def _client(port: int, bodies: Bodies, prefix: str, stop_at: float, latencies: list, codes: dict) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    n = 0
    try:
        while time.perf_counter() < stop_at:
            n += 1
            body = bodies.body(f"79025.{prefix}{n:010d}".encode())
            head = (f"POST /xml130 HTTP/1.1\r\nHost: {HOST}:{port}\r\nContent-Type: application/xml\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n").encode()
            started = time.perf_counter()
            writer.write(head + body)
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            answer = await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            code = int(status_line.split()[1])
            if code == 200 and b'"accepted"' not in answer:
                code = -1
            codes[code] = codes.get(code, 0) + 1
    finally:
        writer.close()


async def _run(port: int, bodies: Bodies, clients: int, duration: float, tag: str) -> dict:
    latencies: list[float] = []
    codes: dict[int, int] = {}
    started = time.perf_counter()
    stop_at = started + duration
    await asyncio.gather(*(_client(port, bodies, f"{tag}{c:03d}", stop_at, latencies, codes) for c in range(clients)))
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else 0.0

    return {"clients": clients, "elapsed_s": round(elapsed, 2), "accepted": codes.get(200, 0),
            "files_per_s": round(codes.get(200, 0) / elapsed, 1), "p50_ms": round(pct(0.5), 1),
            "p99_ms": round(pct(0.99), 1), "other_answers": {str(k): v for k, v in codes.items() if k != 200}}


def _pin(cpu: str) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        return ["taskset", "-c", cpu]
    return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    bodies = Bodies(SAMPLE.read_bytes())
    temp = tempfile.mkdtemp(prefix="hssk-xml-bench-")
    port_file = Path(temp) / "port"
    env = dict(os.environ, HSSK_STORE__SYNCHRONOUS="FULL")
    gateway = subprocess.Popen(_pin(GATEWAY_CPU) + [str(PYTHON), __file__, "serve", str(Path(temp) / "data"),
                                                    str(port_file)], env=env, stdout=subprocess.DEVNULL,
                               stderr=open(Path(temp) / "gateway.log", "wb"))
    if _pin(CLIENT_CPU):
        os.sched_setaffinity(0, {int(CLIENT_CPU)})
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text():
            if gateway.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the gateway did not start; see " + str(Path(temp) / "gateway.log"))
            time.sleep(0.05)
        port = int(port_file.read_text())
        asyncio.run(_run(port, bodies, max(args.clients), args.warmup, "W"))
        results = [asyncio.run(_run(port, bodies, n, args.duration, f"R{i}")) for i, n in enumerate(args.clients)]
    finally:
        gateway.send_signal(signal.SIGTERM)
        try:
            gateway.wait(30)
        except subprocess.TimeoutExpired:
            gateway.kill()
        shutil.rmtree(temp, ignore_errors=True)
    if args.json:
        print(json.dumps({"sample": SAMPLE.name, "bytes": len(bodies.body(SAMPLE_MA_LK)), "runs": results}))
        return 0
    print(f"{SAMPLE.name} ({len(bodies.body(SAMPLE_MA_LK))} bytes), {args.duration:g} s per run")
    print("clients | files/s   p50 ms   p99 ms | accepted | other answers")
    for r in results:
        print(f"{r['clients']:>7} | {r['files_per_s']:>7} {r['p50_ms']:>8} {r['p99_ms']:>8} | {r['accepted']:>8} | "
              f"{r['other_answers'] or '-'}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3])
    else:
        sys.exit(main())
