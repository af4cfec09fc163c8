#!/usr/bin/python3
"""A throwaway SMTP server for postern's tests and demo: Debian's aiosmtpd.

Run it with /usr/bin/python3 (Debian's interpreter, which has python3-aiosmtpd).

    smtp_server.py --spool DIR [--host 127.0.0.1] [--port 0] [--ready FILE]

It listens on HOST:PORT (port 0: a free one chosen by the kernel, no race),
stores every accepted message in DIR as NNNNNN.eml (the DATA bytes exactly as
received, after dot-unstuffing) plus NNNNNN.json (envelope: mail_from,
rcpt_tos, peer, size) written last and atomically, so a test can wait for the
.json file and then read both. When it listens it writes its port to FILE
(atomically) if --ready is given, and prints "smtp listening HOST:PORT".
SIGTERM/SIGINT stop it.
"""

import argparse
import asyncio
import itertools
import json
import os
import signal
import socket
import sys

try:
    from aiosmtpd.smtp import SMTP
except ImportError:  # pragma: no cover - environment problem, say it clearly
    sys.stderr.write(
        "smtp_server.py: aiosmtpd is missing: install python3-aiosmtpd and run "
        "with /usr/bin/python3 (running %s)\n" % sys.executable
    )
    sys.exit(3)


class SpoolHandler:
    def __init__(self, spool):
        self.spool = spool
        self.counter = itertools.count(1)

    async def handle_DATA(self, server, session, envelope):
        n = next(self.counter)
        base = os.path.join(self.spool, "%06d" % n)
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        with open(base + ".eml.tmp", "wb") as f:
            f.write(content)
        os.rename(base + ".eml.tmp", base + ".eml")
        meta = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "peer": list(session.peer) if session.peer else None,
            "size": len(content),
        }
        with open(base + ".json.tmp", "w") as f:
            json.dump(meta, f)
        os.rename(base + ".json.tmp", base + ".json")
        return "250 2.0.0 Ok: queued as %06d" % n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--spool", required=True)
    ap.add_argument("--ready")
    ap.add_argument("--hostname", default="smtp.test")
    args = ap.parse_args()

    os.makedirs(args.spool, exist_ok=True)
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(128)
    port = sock.getsockname()[1]

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    handler = SpoolHandler(args.spool)

    def factory():
        return SMTP(
            handler,
            hostname=args.hostname,
            decode_data=False,
            data_size_limit=64 * 1024 * 1024,
            enable_SMTPUTF8=True,
            loop=loop,
        )

    server = loop.run_until_complete(loop.create_server(factory, sock=sock))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)

    if args.ready:
        tmp = args.ready + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.rename(tmp, args.ready)
    print("smtp listening %s:%d" % (args.host, port), flush=True)

    loop.run_until_complete(stop.wait())
    server.close()
    loop.run_until_complete(server.wait_closed())
    loop.close()


if __name__ == "__main__":
    main()
