"""Import an immunization list export of 200,000 rows, interrupted and resumed, and report rows/s.

    .venv/bin/python bench/immunization_import.py                  # 200,000 rows, killed at 40 %
    .venv/bin/python bench/immunization_import.py --rows 20000 --kill-at 0.5 --json

It writes a synthetic CSV export (two doses per child, each child with its CCCD, NIIS id and its
mother's CCCD), creates a journal in a fresh temp data dir (a file destination configured, so each
row is rendered and queued as in production), runs ``hssk-gateway immunization import FILE`` as a
subprocess, SIGKILLs it once the import's checkpoint has passed ``--kill-at`` of the rows, runs it
again to the end, and checks the journal: one message and one outbox row per row, no control id or
idempotency key twice. It reports each run's rows/s and peak resident memory (VmHWM, read from
/proc while it runs), so "constant memory" can be read off a 20,000 and a 200,000-row run.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).parent / "hssk-gateway"
HEADER = ("MA_CSKCB,MA_DOI_TUONG,HO_TEN,NGAY_SINH,GIOI_TINH,SO_CCCD,MA_THE_BHYT,HO_TEN_ME,CCCD_ME,MA_VACXIN,"
          "TEN_VACXIN,MUI_THU,NGAY_TIEM,SO_LO,HAN_DUNG,NHA_SAN_XUAT,TRANG_THAI,LY_DO_KHONG_TIEM,MA_MUI_TIEM")
VACCINES = (("08", "Viêm gan B"), ("19", "BCG"), ("102", "DPT-VGB-Hib"), ("02", "OPV"), ("10", "IPV"), ("05", "Sởi"))


def write_export(path: Path, rows: int) -> None:
    with open(path, "w", encoding="utf-8") as out:
        out.write(HEADER + "\n")
        for n in range(rows):
            child = n // 2
            code, name = VACCINES[n % len(VACCINES)]
            out.write(f"79001,NIIS{child:08d},Nguyễn Văn An,20240110,1,079224{child:06d},,Lê Thị Mẫu,"
                      f"079190{child % 1_000_000:06d},{code},{name},{n % 3 + 1},2025031{n % 9 + 1},LOT{n % 50},"
                      f"20261231,Nhà SX,CP,,MT{n:09d}\n")


def make_journal(data_dir: Path) -> None:
    """The journal a gateway would create here (schema, identity file), without serving."""
    from gateway.core.journal_identity import record_journal
    from gateway.core.store import Store

    store = Store(data_dir / "gateway.db")
    store.make_private()
    store.migrate()
    record_journal(store.path)


class PeakMemory(threading.Thread):
    """Polls a process's VmHWM (peak resident set) until it ends."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak_kib = pid, 0

    def run(self) -> None:
        status = Path(f"/proc/{self.pid}/status")
        while True:
            try:
                text = status.read_text()
            except OSError:
                return
            for line in text.splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_kib = max(self.peak_kib, int(line.split()[1]))
            time.sleep(0.05)


def checkpoint(database: Path) -> int:
    try:
        conn = sqlite3.connect(database, timeout=30)
        try:
            return conn.execute("SELECT coalesce(max(done), 0) FROM immunization_imports").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0


def run_import(export: Path, config: Path, kill_after: int | None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HSSK_")}
    started = time.monotonic()
    process = subprocess.Popen([str(CLI), "immunization", "import", str(export), "--config", str(config), "--json",
                                "--quiet"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    memory = PeakMemory(process.pid)
    memory.start()
    killed = False
    if kill_after is not None:
        database = config.parent / "data" / "gateway.db"
        while process.poll() is None and checkpoint(database) < kill_after:
            time.sleep(0.1)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            killed = True
    out, err = process.communicate()
    seconds = time.monotonic() - started
    memory.join(timeout=1)
    report = json.loads(out) if out and not killed else {}
    if not killed and process.returncode != 0:
        raise SystemExit(f"the import failed ({process.returncode}): {err.decode()[-2000:]}")
    return {"seconds": round(seconds, 2), "peak_rss_mib": round(memory.peak_kib / 1024, 1), "killed": killed,
            "report": {k: report.get(k) for k in ("rows", "skipped", "accepted", "repeats", "errors", "rejected")}}


def counts(database: Path) -> dict:
    conn = sqlite3.connect(database)
    try:
        messages, control_ids = conn.execute("SELECT count(*), count(DISTINCT control_id) FROM messages").fetchone()
        rows, keys = conn.execute("SELECT count(*), count(DISTINCT idempotency_key) FROM outbox").fetchone()
    finally:
        conn.close()
    return {"messages": messages, "control_ids": control_ids, "outbox_rows": rows, "idempotency_keys": keys}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--kill-at", type=float, default=0.4, help="share of the rows after which the first run is "
                                                                   "SIGKILLed (0: no interruption)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="hssk-import-bench-") as tmp:
        root = Path(tmp)
        export, config = root / "export.csv", root / "gateway.toml"
        write_export(export, args.rows)
        make_journal(root / "data")
        config.write_text(f'data_dir = "{root / "data"}"\n\n[destinations.files]\nkind = "file"\nformat = "json"\n'
                          f'directory = "{root / "drop"}"\n', encoding="utf-8")
        runs = []
        if args.kill_at:
            runs.append(run_import(export, config, int(args.rows * args.kill_at)))
        runs.append(run_import(export, config, None))
        found = counts(root / "data" / "gateway.db")
    fed = runs[-1]["report"]
    seconds = sum(run["seconds"] for run in runs)
    summary = {"rows": args.rows, "runs": runs, "journal": found, "seconds": round(seconds, 1),
               "rows_per_second": round(args.rows / seconds), "skipped_on_resume": fed["skipped"],
               "fed_again_on_resume": fed["repeats"], "lost": args.rows - found["control_ids"],
               "doubled": found["messages"] - found["control_ids"] + found["outbox_rows"] - found["idempotency_keys"]}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        for n, run in enumerate(runs, 1):
            what = "killed" if run["killed"] else "finished"
            print(f"run {n}: {what} after {run['seconds']} s, peak RSS {run['peak_rss_mib']} MiB {run['report']}")
        print(f"{args.rows} rows in {summary['seconds']} s over {len(runs)} runs: {summary['rows_per_second']} rows/s; "
              f"resumed after {fed['skipped']} rows skipped and {fed['repeats']} fed again; journal {found}; "
              f"lost {summary['lost']}, doubled {summary['doubled']}")
    return 0 if summary["lost"] == 0 and summary["doubled"] == 0 and found["outbox_rows"] == args.rows else 1


if __name__ == "__main__":
    sys.exit(main())
