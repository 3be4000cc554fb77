"""Import a BHXH population list of 1,000,000 rows and report rows/s and peak resident memory.

    .venv/bin/python bench/bhxh_import.py                        # 1,000,000 rows, no destination
    .venv/bin/python bench/bhxh_import.py --destination json     # each resident queued to a json destination
    .venv/bin/python bench/bhxh_import.py --rows 100000 --again  # then import it again (nothing changed)

It writes a synthetic list (each resident with a BHXH number, a card, a CCCD, a birth date, an
address and its province/district/commune codes), creates a journal in a fresh temp data dir,
runs ``hssk-gateway bhxh import FILE`` as a subprocess and samples the resident memory of it and
its list reader (a forked child) every 50 ms while it runs: RSS summed (pages the two share
counted twice, an upper bound) and PSS summed (shared pages split between them). ``--again`` imports the same file a second time (the
row digests skip every row); ``--changed F`` then changes the card of a fraction F of the rows
first. The figures: rows/s over the whole command (start-up, the file's digest and the last
commit included), peak memory sampled, and the machine's load average at the start.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLI = Path(sys.executable).parent / "hssk-gateway"
sys.path.insert(0, str(REPO))
HEADER = "maSoBHXH,hoTen,ngaySinh,gioiTinh,diaChi,maThe,gtTheTu,gtTheDen,maDKBD,CCCD,maTinh,maHuyen,maXa"
NAMES = ("Nguyễn Văn An", "Trần Thị Bình", "Lê Hoàng Cường", "Phạm Thị Dung", "Hoàng Văn Em", "Võ Thị Phương")


def write_list(path: Path, rows: int, changed: float = 0.0) -> None:
    """``rows`` residents of province 79, spread over 24 districts; ``changed`` of them with a new card."""
    every = int(1 / changed) if changed else 0
    with open(path, "w", encoding="utf-8") as out:
        out.write(HEADER + "\n")
        for n in range(rows):
            bhxh = f"79{n:08d}"
            year = 1940 + n % 80
            group = "HS" if every and n % every == 0 else "GD"
            sex = n % 2
            out.write(f"{bhxh},{NAMES[n % len(NAMES)]},{n % 28 + 1:02d}/{n % 12 + 1:02d}/{year},"
                      f"{('Nam', 'Nữ')[sex]},\"{n % 300} Đường số {n % 50}, Phường {n % 20}\",{group}479{bhxh},"
                      f"01/01/2025,31/12/2025,79{n % 100:03d},079{sex + (2 if year >= 2000 else 0)}{year % 100:02d}"
                      f"{n % 1000000:06d},79,{760 + n % 24},{26000 + n % 300}\n")


def make_journal(data_dir: Path) -> None:
    from gateway.core.store import Store

    data_dir.mkdir(parents=True)
    Store(data_dir / "gateway.db").migrate()


def run(path: Path, config: Path) -> dict:
    """The import as a subprocess, its memory sampled while it runs."""
    started = time.monotonic()
    process = subprocess.Popen([str(CLI), "bhxh", "import", str(path), "--config", str(config), "--json", "--quiet"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = {"rss": 0, "pss": 0}

    def sample() -> None:
        while process.poll() is None:
            rss = pss = 0
            for pid in [process.pid, *_children(process.pid)]:
                try:
                    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                        if line.startswith("Rss:"):
                            rss += int(line.split()[1])
                        elif line.startswith("Pss:"):
                            pss += int(line.split()[1])
                except OSError:
                    continue
            peak["rss"], peak["pss"] = max(peak["rss"], rss), max(peak["pss"], pss)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    out, err = process.communicate()
    sampler.join()
    seconds = time.monotonic() - started
    if process.returncode != 0:
        raise SystemExit(f"import failed ({process.returncode}): {err[-2000:]}")
    report = json.loads(out)
    return {"rows": report["rows"], "changed": report["changed"], "queued": report["queued"],
            "seconds": round(seconds, 2), "rows_per_second": round(report["rows"] / seconds),
            "peak_rss_mb": round(peak["rss"] / 1024, 1), "peak_pss_mb": round(peak["pss"] / 1024, 1)}


def _children(pid: int) -> list[int]:
    """The import's child processes (its list reader)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--destination", choices=("none", "json"), default="none",
                        help="json: a file destination of format json takes the residents (each queued)")
    parser.add_argument("--again", action="store_true", help="import the same list a second time")
    parser.add_argument("--changed", type=float, default=0.0, help="with --again: the share of rows with a new card")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bhxh-bench-") as tmp:
        root = Path(tmp)
        data_dir = root / "data"
        make_journal(data_dir)
        config = root / "gateway.toml"
        text = f'data_dir = "{data_dir}"\n'
        if args.destination == "json":
            text += f'[destinations.store]\nkind = "file"\nformat = "json"\ndirectory = "{root / "drop"}"\n'
        config.write_text(text, encoding="utf-8")
        path = root / "list.csv"
        write_list(path, args.rows)
        results = {"load_average": [round(v, 2) for v in load], "size_mb": round(path.stat().st_size / 2**20, 1),
                   "destination": args.destination, "first": run(path, config)}
        if args.again:
            write_list(path, args.rows, args.changed)
            results["again"] = run(path, config)
        results["journal_mb"] = round(sum(p.stat().st_size for p in data_dir.glob("gateway.db*")) / 2**20, 1)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"load average at start {results['load_average']}; list {results['size_mb']} MB; destination "
          f"{args.destination}; journal {results['journal_mb']} MB after")
    for name in ("first", "again"):
        if name in results:
            r = results[name]
            print(f"  {name}: {r['rows']:,} rows ({r['changed']:,} changed, {r['queued']:,} queued) in {r['seconds']} s "
                  f"= {r['rows_per_second']:,} rows/s, peak RSS {r['peak_rss_mb']} MB (PSS {r['peak_pss_mb']} MB), "
                  f"import and list reader together")


if __name__ == "__main__":
    main()
