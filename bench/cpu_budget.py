"""The CPU one message costs in each part of the gateway, in process, beside python-hl7's own parse.

    .venv/bin/python bench/cpu_budget.py                       # ADT^A04 sample, synchronous=FULL
    .venv/bin/python bench/cpu_budget.py --messages 2000 --batches 1 2 4 8 16

`mllp_throughput.py` says how fast the whole gateway is; this says what each message costs in
the parts the throughput target must pay for, with no sockets and no reactor, so a reader can see
whether a target is within reach before anyone tunes anything:

1. the peer's own work: ``hl7.parse`` and ``create_ack`` (python-hl7), what the baseline server
   does for each message besides its socket I/O;
2. the gateway's decision: ``Pipeline.decide`` plus the ACK, with the plugins and config of
   ``config/gateway.toml`` (the vendor mapping, the identity rules, routing and rendering);
3. the journal: the gateway's own ``JournalWriter`` committing those decisions (message row and
   outbox rows, the real schema) in groups of each ``--batches`` size, with the configured fsync.
   The CPU is the whole process's (writer and checkpoint threads) divided by the messages.

Each message has its own MSH-10, so the journal sees no repeats. Run it pinned to one CPU
(``taskset -c 1``) to compare with the throughput runs, which pin the gateway there too.
"""
from __future__ import annotations

import argparse
import resource
import tempfile
import threading
import time
import timeit
from pathlib import Path

import hl7

from gateway.config import load_config
from gateway.core.ack import acknowledgements
from gateway.core.metrics import Metrics
from gateway.core.pipeline import Pipeline
from gateway.core.plugins import build_plugin_manager
from gateway.core.store import JournalWriter, Store
from gateway.formats.hl7v2 import normalize_segment_ends, with_msh_field
from gateway.model.envelope import Envelope

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "tests" / "messages" / "adt_a04.hl7"


def best_microseconds(fn, items: list, repeat: int) -> float:
    """Best of ``repeat`` passes over ``items``, per item: the machine is shared, the minimum is
    the run least disturbed by others."""
    return min(timeit.repeat(lambda: [fn(i) for i in items], number=1, repeat=repeat)) / len(items) * 1e6


class _Reactor:
    """Enough of a reactor for the writer: answers run on the writer thread, time is wall time."""

    def callFromThread(self, f, *args) -> None:
        f(*args)

    def seconds(self) -> float:
        return time.time()


class _Job:
    """One decision on its way through the writer (the WriteJob protocol of the store)."""

    def __init__(self, decision, done: threading.Semaphore) -> None:
        self.decision = decision
        self._done = done
        self.result = None

    def begin_commit(self) -> None:
        pass

    def record_commit(self, result) -> None:
        self.result = result

    def answer(self) -> None:
        self._done.release()


def process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def journal_cost(store: Store, decisions: list, batch: int) -> tuple[float, float, float]:
    """(CPU µs per message, wall µs per commit, mean messages per commit) for ``decisions``
    submitted ``batch`` at a time, each group waited for before the next."""
    metrics = Metrics()
    writer = JournalWriter(store, _Reactor(), metrics)
    writer.start()
    done = threading.Semaphore(0)
    groups = [decisions[i:i + batch] for i in range(0, len(decisions) - batch + 1, batch)]
    cpu, wall = process_cpu(), time.perf_counter()
    jobs = []
    for group in groups:
        queued = [_Job(d, done) for d in group]
        for job in queued:
            writer.submit(job)
        for _ in queued:
            done.acquire()
        jobs += queued
    cpu, wall = process_cpu() - cpu, time.perf_counter() - wall
    stopped = threading.Event()
    writer.stop().addCallback(lambda _: stopped.set())
    stopped.wait()
    failed = [j.result for j in jobs if isinstance(j.result, Exception)]
    if failed:
        raise SystemExit(f"journal commit failed: {failed[0]}")
    commits = metrics.registry.get_sample_value("hssk_commit_batch_size_count")
    return cpu / len(jobs) * 1e6, wall / commits * 1e6, len(jobs) / commits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", type=Path, default=SAMPLE, help="one HL7 message (default: the ADT^A04 sample)")
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "gateway.toml")
    parser.add_argument("--messages", type=int, default=2000, help="distinct messages per measurement")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8], help="messages per commit")
    parser.add_argument("--synchronous", default="FULL", help="SQLite synchronous for the journal (default FULL)")
    parser.add_argument("--repeat", type=int, default=5, help="passes of the in-process steps; the best counts")
    args = parser.parse_args()

    text = normalize_segment_ends(args.file.read_text(encoding="utf-8").strip())
    config = load_config(args.config)
    pipeline = Pipeline(build_plugin_manager(config).hook, config)
    raws = [with_msh_field(text, text[3], 10, f"BUDGET{n:08d}").encode("utf-8")  # MSH-10, as mllp-load does
            for n in range(args.messages * (1 + len(args.batches)))]
    envelopes = [Envelope(raw, "mllp", "127.0.0.1:1", time.time()) for raw in raws]
    decide_set = envelopes[:args.messages]

    def decide_and_ack(envelope: Envelope) -> None:
        decision = pipeline.decide(envelope)
        acknowledgements(decision.message, decision.ack_code, decision.issues, 0.0)

    first = pipeline.decide(decide_set[0])
    if first.ack_code not in ("AA", "CA"):
        raise SystemExit(f"the sample is not accepted: {first.ack_code} {[i.text for i in first.issues]}")
    peer = best_microseconds(lambda e: hl7.parse(e.raw.decode("utf-8")).create_ack(), decide_set, args.repeat)
    decide = best_microseconds(decide_and_ack, decide_set, args.repeat)

    print(f"{args.file.name}, {args.messages} distinct messages, CPU per message on one core")
    print(f"  python-hl7 parse + create_ack (the peer's own work)   {peer:8.0f} µs")
    print(f"  gateway Pipeline.decide + ACK                         {decide:8.0f} µs")
    rest = iter(envelopes[args.messages:])
    with tempfile.TemporaryDirectory(prefix="hssk-budget-") as data_dir:
        store = Store(Path(data_dir) / "journal.sqlite", args.synchronous)
        store.migrate()
        for batch in args.batches:
            decisions = [pipeline.decide(next(rest)) for _ in range(args.messages)]
            cpu, wall, size = journal_cost(store, decisions, batch)
            print(f"  gateway journal, {size:4.1f} messages per commit ({args.synchronous})   {cpu:8.0f} µs"
                  f"   ({wall:.0f} µs wall per commit)")
    print(f"At 10x the peer, a message may cost the gateway {peer / 10:.0f} µs in all (python-hl7's parse alone "
          f"taken as the peer's cost; its socket work only adds to it).")


if __name__ == "__main__":
    main()
