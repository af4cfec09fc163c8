"""What an attacker who connects and sends little or nothing can cost
(tests/security-checklist.md T5, issue 11 findings 9 and 10):

- a connection that never sends a byte holds no TLS state: its descriptor,
  a small session and a timer, until handshake_timeout closes it;
- `max_handshakes` caps the client handshakes in progress (an SSL object
  each, made at the client's first byte): beyond it a handshake is refused
  before any TLS work, logged and counted like max_connections, while
  established sessions carry on and silent connections are not counted;
- silent connections to `metrics` cannot lock out a real scraper.
"""

import socket
import time

import harness
from harness import (
    PASSWORD,
    SLOW,
    USER,
    PosternTestCase,
    client_hello,
    free_port,
    imap_cmd,
    imap_login,
    plain_connect,
    read_to_close,
    svc,
    tls_connect,
    wait_until,
)
from starttls_util import starttls_svc
from test_observability import scrape

# What one silent connection may add to postern's RSS. Before, the SSL
# object and its read buffer came at accept: ~43 KiB each.
SILENT_KIB_MAX = 8


def silent_connections(port, n):
    return [socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW) for _ in range(n)]


def close_all(socks):
    for s in socks:
        s.close()


def still_open(sock):
    """The peer has neither closed nor reset SOCK (nothing is expected to arrive)."""
    return read_to_close(sock, 0.2) is None


def stalled_handshake(port):
    """A connection whose handshake is in progress: its ClientHello sent and
    the server's first flight received, never finished."""
    s = plain_connect(port)
    s.sendall(client_hello())
    s.settimeout(5 * SLOW)
    first = s.recv(65536)
    if not first.startswith(b"\x16\x03"):
        raise AssertionError("no ServerHello for a ClientHello: %r" % first[:50])
    return s


class SilentConnections(PosternTestCase):
    def test_silent_connections_hold_no_tls_state(self):
        """1000 connections that send nothing add far less than the ~43 KiB
        each that an SSL object made at accept cost, and do not stop a real
        client from being served meanwhile."""
        n = 1000
        p = self.postern([("imaps", svc("imap", handshake_timeout="10m"))], {"max_connections": 5000})
        base_fds = p.nfds()
        # one-off allocations (libev's tables, the first sessions) first
        warm = silent_connections(p.port(), 50)
        self.addCleanup(close_all, warm)
        wait_until(lambda: p.nfds() >= base_fds + 50, msg="postern to accept 50 connections")
        rss0 = p.rss_kb()
        socks = silent_connections(p.port(), n)
        self.addCleanup(close_all, socks)
        wait_until(lambda: p.nfds() >= base_fds + 50 + n, timeout=20.0,
                   msg="postern to accept %d silent connections" % n, detail=lambda: " (fds %d)" % p.nfds())
        grown = p.rss_kb() - rss0
        self.assertLess(grown / n, SILENT_KIB_MAX,
                        "RSS grew by %d KiB for %d silent connections (%.1f KiB each)" % (grown, n, grown / n))
        # a client that speaks is served at once among them
        client = tls_connect(p.port())
        self.addCleanup(client.close)
        imap_cmd(imap_login(client), "z", "LOGOUT")
        self.assertTrue(all(still_open(s) for s in socks[:5]))

    def test_handshake_timeout_closes_silent_connections(self):
        """Silent connections are still closed at handshake_timeout, each
        logged as a timed-out handshake, their descriptors released."""
        n = 50
        p = self.postern([("imaps", svc("imap", handshake_timeout="1s"))])
        base_fds = p.nfds()
        t0 = time.monotonic()
        socks = silent_connections(p.port(), n)
        self.addCleanup(close_all, socks)
        for s in socks:
            self.assertEqual(read_to_close(s, 5 * SLOW), b"", "silent connection not closed")
        took = time.monotonic() - t0
        self.assertGreater(took, 0.9, "silent connections closed before handshake_timeout")
        p.wait_for(contains="handshake timed out after 1s", count=n, timeout=5.0)
        wait_until(lambda: p.nfds() <= base_fds, msg="descriptors released",
                   detail=lambda: " (fds %d, at start %d)" % (p.nfds(), base_fds))


class HandshakeCap(PosternTestCase):
    def test_handshakes_beyond_max_handshakes_are_refused(self):
        """With max_handshakes = 3 and three handshakes stalled half-way, a
        fourth ClientHello is closed unanswered, logged and counted as
        refused reason=max_handshakes; an established session keeps working,
        connections that sent nothing are not counted, and a finished
        handshake frees its place."""
        mport = free_port()
        p = self.postern([("imaps", svc("imap"))], {"metrics": "127.0.0.1:%d" % mport, "max_handshakes": 3})
        established = harness.IMAP4_SSL(p.port())
        self.addCleanup(established.sock.close)
        self.assertEqual(established.login(USER, PASSWORD)[0], "OK")
        silent = silent_connections(p.port(), 5)
        self.addCleanup(close_all, silent)
        stalled = [stalled_handshake(p.port()) for _ in range(3)]
        self.addCleanup(close_all, stalled)

        extra = plain_connect(p.port())
        self.addCleanup(extra.close)
        extra.sendall(client_hello())
        self.assertEqual(read_to_close(extra, 5 * SLOW), b"", "a fourth handshake was answered")
        p.wait_for(contains="refused reason=max_handshakes limit=3")
        s = scrape(mport)
        self.assertEqual(s.get("postern_refused_total", service="imaps", reason="max_handshakes"), 1, s.text)
        self.assertEqual(s.get("postern_refused_total", service="imaps", reason="max_connections"), 0, s.text)

        self.assertEqual(established.noop()[0], "OK")
        self.assertTrue(all(still_open(x) for x in silent + stalled), "a connection was closed meanwhile")

        # one stalled handshake gone: a new client is served
        port0 = stalled[0].getsockname()[1]
        stalled[0].close()
        self.assertSessionEnd(p, port0, reason="handshake-failed")
        client = tls_connect(p.port())
        self.addCleanup(client.close)
        imap_cmd(imap_login(client), "z", "LOGOUT")
        # a silent connection that speaks now takes the third place; then the
        # next one that speaks is refused
        silent[0].sendall(client_hello())
        self.assertTrue(silent[0].recv(65536).startswith(b"\x16\x03"), "no ServerHello")
        silent[1].sendall(client_hello())
        self.assertEqual(read_to_close(silent[1], 5 * SLOW), b"", "a fourth handshake was answered")
        p.wait_for(contains="refused reason=max_handshakes", count=2)
        self.assertEqual(established.noop()[0], "OK")
        established.logout()

    def test_starttls_handshake_counts_against_max_handshakes(self):
        """After STARTTLS, the handshake is capped alike: with one stalled,
        a second client's handshake is refused, the first one's plaintext
        phase untouched."""
        p = self.postern([("imap", starttls_svc("imap"))], {"max_handshakes": 1})

        def starttls(tag):
            s = plain_connect(p.port())
            r = harness.Reader(s)
            self.assertTrue(r.readline().startswith(b"* OK"))
            s.sendall(tag + b" STARTTLS\r\n")
            self.assertTrue(r.readline().startswith(tag + b" OK"))
            return s

        first = starttls(b"a")
        self.addCleanup(first.close)
        first.sendall(client_hello())
        first.settimeout(5 * SLOW)
        self.assertTrue(first.recv(65536).startswith(b"\x16\x03"))

        second = starttls(b"b")
        self.addCleanup(second.close)
        second.sendall(client_hello())
        self.assertEqual(read_to_close(second, 5 * SLOW), b"", "a second handshake was answered")
        p.wait_for(contains="refused reason=max_handshakes limit=1")
        self.assertTrue(still_open(first))


class MetricsSlots(PosternTestCase):
    SLOTS = 64  # connections the metrics listener holds (metrics.c MAX_CLIENTS)

    def flood(self, port, n, send=b""):
        """N connections to the metrics port, each sending SEND (maybe
        nothing) and no more; returns once postern has taken them all, which
        the oldest show by being closed to make room."""
        socks = silent_connections(port, n)
        self.addCleanup(close_all, socks)
        for x in socks:
            if send:
                x.sendall(send)
        for x in socks[: n - self.SLOTS]:
            self.assertEqual(read_to_close(x, 5 * SLOW), b"", "an old connection kept its slot")
        self.assertTrue(still_open(socks[-1]), "the newest connection was closed")
        return socks

    def assertScrapeAtOnce(self, port):
        t0 = time.monotonic()
        s = scrape(port, timeout=2.0)
        took = time.monotonic() - t0
        self.assertEqual(s.status, 200, s.text)
        self.assertIsNotNone(s.get("postern_connections_total", service="imaps"), s.text)
        self.assertLess(took, 1.0 * SLOW, "a scrape took %.1fs behind idle connections" % took)

    def test_silent_connections_cannot_blind_metrics(self):
        """More connections to /metrics than it has slots, silent or with
        half a request: a scrape still gets its 200 and the metrics at once,
        the oldest idle connections making room."""
        mport = free_port()
        self.postern([("imaps", svc("imap"))], {"metrics": "127.0.0.1:%d" % mport})
        self.flood(mport, self.SLOTS + 36)
        self.assertScrapeAtOnce(mport)
        self.flood(mport, self.SLOTS + 36, send=b"GET /metrics HTTP/1.0\r\n")  # never finished
        self.assertScrapeAtOnce(mport)
        self.assertScrapeAtOnce(mport)
