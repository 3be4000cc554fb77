"""Peer baseline for the MLLP benchmark: a python-hl7 asyncio MLLP server.

Every message is fully parsed by python-hl7 (``reader.readmessage()``) and answered with
``message.create_ack()`` (AA). Nothing is stored. This is what "a plain Python MLLP listener"
costs on this machine, so the gateway's numbers can be read against it.

    .venv/bin/python bench/hl7_asyncio_baseline.py PORT

Listens on 127.0.0.1 only. Stops on SIGTERM/SIGINT.
"""
from __future__ import annotations

import asyncio
import signal
import sys

import hl7.mllp


async def handle(reader: hl7.mllp.HL7StreamReader, writer: hl7.mllp.HL7StreamWriter) -> None:
    try:
        while True:
            message = await reader.readmessage()
            writer.writemessage(message.create_ack())
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # peer closed (or reset) the connection
    finally:
        writer.close()


async def main(port: int) -> None:
    # The sample messages declare MSH-18 = UNICODE UTF-8; python-hl7 defaults to ascii.
    server = await hl7.mllp.start_hl7_server(handle, "127.0.0.1", port, encoding="utf-8")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"hl7 asyncio baseline listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: hl7_asyncio_baseline.py PORT")
    asyncio.run(main(int(sys.argv[1])))
