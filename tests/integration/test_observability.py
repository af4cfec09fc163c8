"""Observability: `metrics` (Prometheus text scraped with the real curl),
`log_format = json` (stderr and a log file), `keylog` (NSS key log: mode
0600, the loud warning, TLS 1.3 and 1.2 lines that match the client's own
secrets, and decryption of a captured session with tshark, tests/security-checklist.md
L2/L3)."""

import json
import os
import re
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import tempfile
import time

import harness
from harness import (
    PASSWORD,
    SLOW,
    USER,
    PosternTestCase,
    client_context,
    env,
    free_port,
    read_to_close,
    run,
    shut_down_after,
    svc,
    tls_connect,
    wait_until,
)
from starttls_util import StarttlsCase, imap_response, imap_tagged, starttls_svc

TS_RE = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"

# ---------------------------------------------------------------- metrics helpers

FAMILIES = {
    "postern_connections_total": "counter",
    "postern_connections_active": "gauge",
    "postern_handshake_failures_total": "counter",
    "postern_bytes_total": "counter",
    "postern_backend_errors_total": "counter",
    "postern_starttls_total": "counter",
    "postern_plaintext_auth_refused_total": "counter",
    "postern_refused_total": "counter",
}

SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*",?)*)\})? (\S+)$')
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"\\]*)"')


class Scrape:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body
        self.text = body.decode("utf-8", "replace")
        self.samples = {}
        self.help, self.type = {}, {}
        self.bad = []
        for line in (self.text if status == 200 else "").splitlines():
            if not line:
                continue
            if line.startswith("# HELP "):
                name, _, h = line[7:].partition(" ")
                self.help[name] = h
            elif line.startswith("# TYPE "):
                name, _, t = line[7:].partition(" ")
                self.type[name] = t
            elif line.startswith("#"):
                continue
            else:
                m = SAMPLE_RE.match(line)
                if not m:
                    self.bad.append(line)
                    continue
                labels = tuple(sorted(LABEL_RE.findall(m.group(2) or "")))
                try:
                    self.samples[(m.group(1), labels)] = float(m.group(3))
                except ValueError:
                    self.bad.append(line)

    def get(self, name, default=None, **labels):
        return self.samples.get((name, tuple(sorted(labels.items()))), default)

    def of_service(self, name, service):
        return {k: v for k, v in self.samples.items() if k[0] == name and ("service", service) in k[1]}


def scrape(port, path="/metrics", timeout=5.0):
    """GET with the real curl; Scrape (status, headers dict, parsed body)."""
    r = run(["curl", "-s", "-i", "--max-time", str(int(timeout * SLOW)), "http://127.0.0.1:%d%s" % (port, path)],
            timeout=timeout + 5)
    if r.returncode != 0:
        raise AssertionError("curl %s exited %d: %r" % (path, r.returncode, r.stderr))
    head, sep, body = r.stdout.partition(b"\r\n\r\n")
    if not sep:
        raise AssertionError("no HTTP header end in %r" % r.stdout[:500])
    lines = head.decode("latin-1").split("\r\n")
    m = re.match(r"^HTTP/\d(?:\.\d)? (\d{3})", lines[0])
    if not m:
        raise AssertionError("bad status line %r" % lines[0])
    headers = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(":")
        headers[k.strip().lower()] = v.strip()
    return Scrape(int(m.group(1)), headers, body)


# ---------------------------------------------------------------- metrics


class Metrics(StarttlsCase):
    """One postern with `metrics`, one service per test so that every test
    sees exact deltas of its own series."""

    @classmethod
    def make_services(cls):
        cls.mport = free_port()
        cls.GLOBAL = {"metrics": "127.0.0.1:%d" % cls.mport}
        cls.dead_port = free_port()  # nobody listens there
        return [
            ("imaps", svc("imap")),
            ("active", svc("imap")),
            ("imap143", starttls_svc("imap")),
            ("dead", svc("imap", backend="127.0.0.1:%d" % cls.dead_port, connect_timeout="2s")),
            ("alpn", svc("imap")),
        ]

    def scrape(self, path="/metrics"):
        return scrape(self.mport, path)

    def metric(self, name, **labels):
        s = self.scrape()
        self.assertEqual(s.status, 200)
        return s.get(name, 0.0, **labels)

    def wait_metric(self, name, want, **labels):
        """Poll until the sample equals want; returns the last scrape."""
        last = [None]

        def ok():
            last[0] = self.scrape()
            return last[0].get(name, 0.0, **labels) == want

        try:
            wait_until(ok, timeout=5.0, interval=0.1, msg="%s%r == %s" % (name, labels, want))
        except AssertionError:
            raise AssertionError("%s%r is %s, want %s; scrape:\n%s"
                                 % (name, labels, last[0].get(name, None, **labels), want, last[0].text))
        return last[0]

    def test_format_and_families(self):
        s = self.scrape()
        self.assertEqual(s.status, 200, s.body)
        self.assertEqual(s.headers.get("content-type"), "text/plain; version=0.0.4", s.headers)
        self.assertEqual(s.bad, [], "lines that are not Prometheus samples")
        for name, typ in FAMILIES.items():
            with self.subTest(family=name):
                self.assertIn(name, s.help, "no # HELP line for %s:\n%s" % (name, s.text))
                self.assertTrue(s.help[name].strip(), "empty HELP text for %s" % name)
                self.assertEqual(s.type.get(name), typ, "# TYPE of %s:\n%s" % (name, s.text))
                # HELP and TYPE come before the family's samples
                first_sample = re.search(r"(?m)^%s[{ ]" % name, s.text)
                if first_sample:
                    self.assertLess(s.text.index("# TYPE %s " % name), first_sample.start(), s.text)

    def test_imaps_session_counters(self):
        before = self.scrape()
        conns0 = before.get("postern_connections_total", 0.0, service="imaps")
        in0 = before.get("postern_bytes_total", 0.0, service="imaps", direction="in")
        out0 = before.get("postern_bytes_total", 0.0, service="imaps", direction="out")
        c = harness.IMAP4_SSL(self.port("imaps"))
        local_port = c.sock.getsockname()[1]
        self.assertEqual(c.login(USER, PASSWORD)[0], "OK")
        self.assertEqual(c.select("INBOX", readonly=True), ("OK", [b"4"]))
        self.assertEqual(c.noop()[0], "OK")
        c.logout()
        _, end = self.p.wait_session_end(local_port, service="imaps")
        after = self.scrape()
        self.assertEqual(after.get("postern_connections_total", service="imaps"), conns0 + 1, after.text)
        d_in = after.get("postern_bytes_total", service="imaps", direction="in") - in0
        d_out = after.get("postern_bytes_total", service="imaps", direction="out") - out0
        self.assertGreater(d_in, 0, after.text)
        self.assertGreater(d_out, 0, after.text)
        # the same application bytes as the session's end line
        self.assertEqual(d_in, int(end.fields["in"]), end.raw)
        self.assertEqual(d_out, int(end.fields["out"]), end.raw)
        self.assertEqual(after.get("postern_connections_active", service="imaps"), 0, after.text)
        # every family has its series for the service, with the documented labels
        want = {
            "postern_connections_total": [{}],
            "postern_connections_active": [{}],
            "postern_handshake_failures_total": [{"reason": "timeout"}, {"reason": "error"}],
            "postern_bytes_total": [{"direction": "in"}, {"direction": "out"}],
            "postern_backend_errors_total": [{"reason": "unreachable"}, {"reason": "tls"}],
            "postern_starttls_total": [{"side": "client"}, {"side": "backend"}],
            "postern_plaintext_auth_refused_total": [{}],
            "postern_refused_total": [{"reason": "max_connections"}],
        }
        for name, label_sets in want.items():
            for labels in label_sets:
                self.assertIsNotNone(after.get(name, service="imaps", **labels),
                                     "no %s%r for service imaps:\n%s" % (name, labels, after.text))
        for name in ("postern_handshake_failures_total", "postern_backend_errors_total", "postern_starttls_total",
                     "postern_plaintext_auth_refused_total", "postern_refused_total"):
            for k, v in after.of_service(name, "imaps").items():
                self.assertEqual(v, 0, "%s moved for a plain session" % (k,))

    def test_active_gauge(self):
        with shut_down_after(harness.IMAP4_SSL(self.port("active"))) as c:
            local_port = c.sock.getsockname()[1]
            self.assertEqual(c.login(USER, PASSWORD)[0], "OK")
            s = self.scrape()
            self.assertEqual(s.get("postern_connections_active", service="active"), 1, s.text)
            self.assertEqual(s.get("postern_connections_total", service="active"), 1, s.text)
            # still 1 while the session stays open across scrapes
            self.assertEqual(c.noop()[0], "OK")
            self.assertEqual(self.metric("postern_connections_active", service="active"), 1)
            c.logout()
        self.p.wait_session_end(local_port, service="active")
        s = self.scrape()
        self.assertEqual(s.get("postern_connections_active", service="active"), 0, s.text)
        self.assertEqual(s.get("postern_connections_total", service="active"), 1, s.text)

    def test_starttls_and_plaintext_auth_refused(self):
        before = self.scrape()
        st0 = before.get("postern_starttls_total", 0.0, service="imap143", side="client")
        be0 = before.get("postern_starttls_total", 0.0, service="imap143", side="backend")
        ref0 = before.get("postern_plaintext_auth_refused_total", 0.0, service="imap143")
        c = self.client("imap143")
        self.assertTrue(c.line().startswith(b"* OK"))
        c.send("a LOGIN %s %s\r\n" % (USER, PASSWORD))
        self.assertTrue(imap_tagged(imap_response(c, "a"), "a").startswith(b"a NO"))
        s = self.wait_metric("postern_plaintext_auth_refused_total", ref0 + 1, service="imap143")
        self.assertEqual(s.get("postern_starttls_total", 0.0, service="imap143", side="client"), st0, s.text)
        c.send("b STARTTLS\r\n")
        self.assertTrue(imap_tagged(imap_response(c, "b"), "b").startswith(b"b OK"))
        c.starttls()
        c.send("c LOGIN %s %s\r\n" % (USER, PASSWORD))
        self.assertTrue(imap_tagged(imap_response(c, "c"), "c").startswith(b"c OK"))
        s = self.scrape()
        self.assertEqual(s.get("postern_starttls_total", service="imap143", side="client"), st0 + 1, s.text)
        self.assertEqual(s.get("postern_starttls_total", service="imap143", side="backend"), be0, s.text)
        self.assertEqual(s.get("postern_plaintext_auth_refused_total", service="imap143"), ref0 + 1, s.text)
        c.send("z LOGOUT\r\n")
        imap_response(c, "z")
        c.close()
        self.p.wait_session_end(c.local_port, service="imap143")

    def test_backend_unreachable(self):
        before = self.scrape()
        u0 = before.get("postern_backend_errors_total", 0.0, service="dead", reason="unreachable")
        t0 = before.get("postern_backend_errors_total", 0.0, service="dead", reason="tls")
        s = tls_connect(self.port("dead"))
        local_port = s.getsockname()[1]
        got = read_to_close(s, 8 * SLOW)
        s.close()
        self.assertIsNotNone(got, "postern kept the connection to a dead backend open")
        self.assertTrue(got.startswith(b"* BYE"), got)
        self.p.wait_session_end(local_port, service="dead")
        after = self.wait_metric("postern_backend_errors_total", u0 + 1, service="dead", reason="unreachable")
        self.assertEqual(after.get("postern_backend_errors_total", service="dead", reason="tls"), t0, after.text)

    def test_handshake_failure_alpn(self):
        before = self.scrape()
        e0 = before.get("postern_handshake_failures_total", 0.0, service="alpn", reason="error")
        t0 = before.get("postern_handshake_failures_total", 0.0, service="alpn", reason="timeout")
        r = run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % self.port("alpn"), "-servername", "localhost",
                 "-CAfile", env().ca, "-alpn", "http/1.1"], input=b"", timeout=15)
        out = (r.stdout + r.stderr).decode("utf-8", "replace")
        self.assertNotEqual(r.returncode, 0, out)
        self.assertRegex(out, r"(?i)no.application.protocol", out)
        after = self.wait_metric("postern_handshake_failures_total", e0 + 1, service="alpn", reason="error")
        self.assertEqual(after.get("postern_handshake_failures_total", service="alpn", reason="timeout"), t0,
                         after.text)
        # a control: without ALPN the same service is served
        s = tls_connect(self.port("alpn"))
        self.assertTrue(s.recv(100).startswith(b"* OK"))
        s.close()

    def test_not_found(self):
        for path in ("/", "/metricsx", "/foo", "/metrics/x"):
            with self.subTest(path=path):
                s = self.scrape(path)
                self.assertEqual(s.status, 404, s.body)
                self.assertNotIn(b"postern_", s.body)

    def test_silent_client_does_not_block(self):
        silent = socket.create_connection(("127.0.0.1", self.mport), timeout=5)
        partial = socket.create_connection(("127.0.0.1", self.mport), timeout=5)
        t_conn = time.monotonic()
        partial.sendall(b"GET /metrics HTTP/1.0\r\n")  # never finished
        try:
            time.sleep(0.2)  # postern has read the partial request: the stall under test has begun
            t0 = time.monotonic()
            s = self.scrape()
            took = time.monotonic() - t0
            self.assertEqual(s.status, 200)
            self.assertIn("postern_connections_total", s.help)
            self.assertLess(took, 2.0 * SLOW, "a scrape took %.1fs while a client stayed silent" % took)
            for name, sock in (("silent", silent), ("partial", partial)):
                closed = read_to_close(sock, max(0.0, t_conn + 5.0 + 3.0 * SLOW - time.monotonic()))
                elapsed = time.monotonic() - t_conn
                self.assertIsNotNone(closed, "%s metrics client not cut off after %.1fs" % (name, elapsed))
                self.assertEqual(closed, b"", "%s client got a reply: %r" % (name, closed))
                self.assertGreater(elapsed, 4.0, "%s client cut off already after %.1fs" % (name, elapsed))
                self.assertLess(elapsed, 5.0 + 2.0 * SLOW, "%s client cut off only after %.1fs" % (name, elapsed))
            # and scraping still works afterwards
            self.assertEqual(self.scrape().status, 200)
        finally:
            silent.close()
            partial.close()


class MetricsMaxConnections(PosternTestCase):
    def test_refused_max_connections(self):
        mport = free_port()
        p = self.postern([("imaps", svc("imap"))], {"metrics": "127.0.0.1:%d" % mport, "max_connections": 1})
        with shut_down_after(harness.IMAP4_SSL(p.port("imaps"))) as c:
            self.assertEqual(c.login(USER, PASSWORD)[0], "OK")
            s = scrape(mport)
            self.assertEqual(s.get("postern_connections_active", service="imaps"), 1, s.text)
            r0 = s.get("postern_refused_total", 0.0, service="imaps", reason="max_connections")
            self.assertEqual(r0, 0, s.text)
            with self.assertRaises((ssl.SSLError, OSError)):
                x = tls_connect(p.port("imaps"), timeout=5)
                try:
                    x.recv(100)  # TLS 1.3: the handshake may "succeed" before the close is seen
                    raise ssl.SSLError("recv after close")
                finally:
                    x.close()
            last = [None]

            def moved():
                last[0] = scrape(mport)
                return last[0].get("postern_refused_total", 0.0, service="imaps", reason="max_connections") == 1

            try:
                wait_until(moved, timeout=5.0, interval=0.1, msg="refused_total{reason=max_connections} == 1")
            except AssertionError:
                raise AssertionError("refused_total not 1:\n%s" % last[0].text)
            self.assertEqual(last[0].get("postern_connections_active", service="imaps"), 1, last[0].text)
            p.wait_for(contains="refused reason=max_connections")
            # the first session is unharmed
            self.assertEqual(c.noop()[0], "OK")
            c.logout()


# ---------------------------------------------------------------- log_format = json


def json_lines(text):
    """Parsed objects of the complete lines of text; raises on any line that
    is not a JSON object."""
    out = []
    complete = text[: text.rfind("\n") + 1]
    for raw in complete.splitlines():
        try:
            obj = json.loads(raw)
        except ValueError as e:
            raise AssertionError("not JSON (%s): %r\nall:\n%s" % (e, raw, text[-4000:]))
        if not isinstance(obj, dict):
            raise AssertionError("not a JSON object: %r" % raw)
        out.append(obj)
    return out


def is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


class JsonLogs(PosternTestCase):
    def session(self, p, port):
        with shut_down_after(harness.IMAP4_SSL(port)) as c:
            local_port = c.sock.getsockname()[1]
            self.assertEqual(c.login(USER, PASSWORD)[0], "OK")
            self.assertEqual(c.select("INBOX", readonly=True)[0], "OK")
            c.logout()
        return local_port

    def wait_json(self, read, pred, what, timeout=5.0):
        last = []

        def ok():
            last[:] = json_lines(read())
            return [o for o in last if pred(o)]

        try:
            return wait_until(ok, timeout=timeout, msg=what)
        except AssertionError:
            raise AssertionError("no %s in:\n%s" % (what, "\n".join(json.dumps(o) for o in last[-30:])))

    def check_session(self, read, local_port, service):
        client = "127.0.0.1:%d" % local_port
        ends = self.wait_json(read, lambda o: o.get("client") == client and o.get("event") == "end", "end line")
        objs = json_lines(read())
        starts = [o for o in objs if o.get("client") == client and o.get("event") == "start"]
        self.assertEqual(len(starts), 1, objs)
        self.assertEqual(len(ends), 1, objs)
        st, end = starts[0], ends[0]
        for o in (st, end):
            for k in ("ts", "level", "service", "session", "client", "event"):
                self.assertIn(k, o, o)
            self.assertRegex(o["ts"], TS_RE, o)
            self.assertEqual(o["level"], "info", o)
            self.assertEqual(o["service"], service, o)
            self.assertRegex(o["session"], r"^[0-9a-f]+$", o)
        self.assertEqual(st["session"], end["session"])
        self.assertRegex(st.get("tls", ""), r"^TLSv1\.[23]$", st)
        self.assertRegex(st.get("cipher", ""), r"^\S+$", st)
        self.assertEqual(st.get("sni"), "localhost", st)
        for k in ("in", "out", "duration"):
            self.assertTrue(is_num(end.get(k)), "%s is not a JSON number: %r" % (k, end))
        self.assertIsInstance(end["in"], int, end)
        self.assertIsInstance(end["out"], int, end)
        self.assertGreater(end["in"], 10, end)
        self.assertGreater(end["out"], 100, end)
        self.assertGreaterEqual(end["duration"], 0, end)
        self.assertIn(end.get("reason"), ("client-closed", "backend-closed"), end)
        # no stray "msg": the whole line was key=value fields
        self.assertNotIn("msg", end, end)
        return objs, st

    def check_process_lines(self, objs, p, n=1):
        listening = [o for o in objs if o.get("event") == "listening"]
        self.assertEqual(len(listening), n, objs)
        addrs = {o.get("addr"): o for o in listening}
        lst = addrs.get("127.0.0.1:%d" % p.port("imaps"))
        self.assertIsNotNone(lst, listening)
        self.assertEqual(lst.get("service"), "imaps", lst)
        self.assertRegex(lst.get("ts", ""), TS_RE, lst)
        self.assertEqual(lst.get("level"), "info", lst)
        self.assertNotIn("session", lst, lst)
        self.assertNotIn("client", lst, lst)
        for o in objs:
            self.assertRegex(o.get("ts", ""), TS_RE, o)
            self.assertIn(o.get("level"), ("error", "warn", "info", "debug"), o)

    def test_json_stderr(self):
        dead = free_port()  # nobody listens there
        p = self.postern([("imaps", svc("imap")), ("dead", svc("imap", backend="127.0.0.1:%d" % dead))],
                         {"log_format": "json", "max_connections": 1})
        with shut_down_after(harness.IMAP4_SSL(p.port("imaps"))) as c:
            local_port = c.sock.getsockname()[1]
            self.assertEqual(c.login(USER, PASSWORD)[0], "OK")
            # a connection refused before it is a session: service and client, no session
            x = socket.create_connection(("127.0.0.1", p.port("imaps")), timeout=5)
            x_port = x.getsockname()[1]
            self.assertEqual(read_to_close(x, 5 * SLOW), b"")
            x.close()
            self.assertEqual(c.select("INBOX", readonly=True)[0], "OK")
            c.logout()
        objs, st = self.check_session(p.stderr, local_port, "imaps")
        self.check_process_lines(objs, p, 2)
        refused = [o for o in objs if o.get("client") == "127.0.0.1:%d" % x_port]
        self.assertEqual(len(refused), 1, objs)
        ref = refused[0]
        self.assertEqual((ref.get("service"), ref.get("event"), ref.get("reason"), ref.get("limit")),
                         ("imaps", "refused", "max_connections", 1), ref)
        self.assertEqual(ref.get("level"), "warn", ref)
        self.assertNotIn("session", ref, ref)
        # prose lines of a session (backend unreachable) keep their text in msg
        s = tls_connect(p.port("dead"))
        d_port = s.getsockname()[1]
        self.assertTrue(read_to_close(s, 8 * SLOW).startswith(b"* BYE"))
        s.close()
        client = "127.0.0.1:%d" % d_port
        end = self.wait_json(p.stderr, lambda o: o.get("client") == client and o.get("event") == "end", "end")[0]
        self.assertEqual(end.get("reason"), "backend-unreachable", end)
        self.assertEqual(end.get("service"), "dead", end)
        mine = [o for o in json_lines(p.stderr()) if o.get("session") == end["session"]]
        prose = [o for o in mine if "unreachable" in o.get("msg", "")]
        self.assertTrue(prose, mine)
        self.assertEqual(prose[0].get("level"), "warn", prose)
        self.assertIn("127.0.0.1:%d" % dead, prose[0]["msg"], prose)
        self.assertFalse(any(PASSWORD in json.dumps(o) for o in json_lines(p.stderr())), "password in the log")
        p.stop()
        # everything postern wrote to stderr, shutdown included, is JSON
        text = p.stderr()
        objs = json_lines(text)
        self.assertTrue(text.endswith("\n"), text[-200:])
        self.assertEqual(len(objs), len(text.splitlines()))
        self.assertGreater(len(objs), 8)

    def test_json_log_file(self):
        d = tempfile.mkdtemp(prefix="jsonlog-", dir=env().tmp)
        logfile = os.path.join(d, "postern.log")
        p = self.postern([("imaps", svc("imap"))], {"log_format": "json", "log": logfile})
        read = lambda: p.log_text()  # noqa: E731
        local_port = self.session(p, p.port("imaps"))
        objs, _ = self.check_session(read, local_port, "imaps")
        self.check_process_lines(objs, p)
        p.stop()
        text = p.log_text()
        self.assertEqual(len(json_lines(text)), len(text.splitlines()))
        self.assertTrue(text.endswith("\n"))
        # nothing of it (or anything else that is not JSON) on stderr
        err = p.stderr()
        json_lines(err)
        self.assertNotIn('"event":"start"', err)
        self.assertNotIn('"event":"end"', err)


# ---------------------------------------------------------------- keylog

LABELS13 = ("CLIENT_HANDSHAKE_TRAFFIC_SECRET", "SERVER_HANDSHAKE_TRAFFIC_SECRET", "CLIENT_TRAFFIC_SECRET_0",
            "SERVER_TRAFFIC_SECRET_0", "EXPORTER_SECRET")
KEYLINE_RE = re.compile(r"^([A-Z_0-9]+) ([0-9a-f]{64}) ([0-9a-f]+)$")


def keylog_entries(path):
    """[(label, client_random, secret)] of an NSS key log (comments skipped);
    raises on a malformed line."""
    out = []
    with open(path) as f:
        for line in f.read().splitlines():
            if not line or line.startswith("#"):
                continue
            m = KEYLINE_RE.match(line)
            if not m:
                raise AssertionError("malformed key log line in %s: %r" % (path, line))
            out.append(m.groups())
    return out


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


class Keylog(StarttlsCase):
    @classmethod
    def make_services(cls):
        cls.kdir = tempfile.mkdtemp(prefix="keylog-", dir=env().tmp)
        cls.keylog = os.path.join(cls.kdir, "keys.log")
        cls.GLOBAL = {"keylog": cls.keylog}
        return [("imaps", svc("imap"))]

    def client_session(self, max_version=None, min_version=None):
        """A TLS session whose client writes its own key log; returns the
        client's entries."""
        path = os.path.join(self.kdir, "client-%d.log" % time.monotonic_ns())
        ctx = client_context(max_version=max_version, min_version=min_version)
        ctx.keylog_filename = path
        with shut_down_after(harness.IMAP4_SSL(self.port("imaps"), ssl_context=ctx)) as c:
            local_port = c.sock.getsockname()[1]
            self.assertEqual(c.login(USER, PASSWORD)[0], "OK")
            c.logout()
        self.p.wait_session_end(local_port)
        return keylog_entries(path)

    def test_warning_and_mode(self):
        warns = self.p.find(level="warn", contains=self.keylog)
        self.assertTrue([w for w in warns if "keylog" in w.msg], "no warn line naming %s and keylog:\n%s"
                        % (self.keylog, self.p.log_text()))
        self.assertTrue(os.path.isfile(self.keylog))
        self.assertEqual(mode(self.keylog), 0o600, oct(mode(self.keylog)))

    def test_existing_file_becomes_0600(self):
        d = tempfile.mkdtemp(prefix="keylog-", dir=env().tmp)
        path = os.path.join(d, "old.log")
        with open(path, "w") as f:
            f.write("# kept\n")
        os.chmod(path, 0o644)
        self.assertEqual(mode(path), 0o644)
        p = self.postern([("imaps", svc("imap"))], {"keylog": path})
        self.assertEqual(mode(path), 0o600, oct(mode(path)))
        warns = [w for w in p.find(level="warn", contains=path) if "keylog" in w.msg]
        self.assertEqual(len(warns), 1, p.log_text())
        # appended to, not truncated
        s = tls_connect(p.port("imaps"))
        self.assertTrue(s.recv(100).startswith(b"* OK"))
        s.close()
        wait_until(lambda: keylog_entries(path), msg="key log lines in %s" % path)
        with open(path) as f:
            self.assertTrue(f.read().startswith("# kept\n"))
        # and warned again at reload (postern.ini(5))
        os.chmod(path, 0o644)
        p.signal(signal.SIGHUP)
        p.wait_for(level="warn", contains=path, count=2)
        self.assertEqual(mode(path), 0o600, oct(mode(path)))

    def test_tls13_lines(self):
        mine = self.client_session(min_version=ssl.TLSVersion.TLSv1_3)
        self.assertTrue(mine, "the client wrote no key log")
        randoms = {r for _, r, _ in mine}
        self.assertEqual(len(randoms), 1, mine)
        cr = randoms.pop()
        theirs = [e for e in keylog_entries(self.keylog) if e[1] == cr]
        labels = [e[0] for e in theirs]
        for label in LABELS13:
            self.assertEqual(labels.count(label), 1, "%s for client random %s: %r" % (label, cr, theirs))
        # postern's secrets are the client's secrets (so they can decrypt)
        self.assertEqual({e for e in theirs if e[0] in LABELS13},
                         {e for e in mine if e[0] in LABELS13})

    def test_tls12_client_random(self):
        mine = self.client_session(max_version=ssl.TLSVersion.TLSv1_2)
        self.assertEqual([e[0] for e in mine], ["CLIENT_RANDOM"], mine)
        theirs = [e for e in keylog_entries(self.keylog) if e[1] == mine[0][1]]
        self.assertEqual(theirs, mine)

    def test_tshark_decrypts(self):
        """L3, the developer's way: capture on lo, decrypt with the key log."""
        tshark = shutil.which("tshark")
        if not tshark:
            self.fail("tshark is not installed (Debian package tshark; packaging/deps.sh installs it): "
                      "cannot check that the key log decrypts a capture (tests/security-checklist.md L3)")
        port = self.port("imaps")
        pcap = os.path.join(self.kdir, "imaps-%d.pcapng" % port)
        errpath = pcap + ".stderr"
        with open(errpath, "wb") as err:
            cap = subprocess.Popen([tshark, "-i", "lo", "-f", "tcp port %d" % port, "-w", pcap],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        try:
            def capturing():
                if cap.poll() is not None:
                    raise AssertionError("tshark exited %s: %s" % (cap.returncode, open(errpath).read()))
                return "Capturing on" in open(errpath, errors="replace").read() and os.path.exists(pcap)

            wait_until(capturing, timeout=15.0, interval=0.1, msg="tshark capturing")
            time.sleep(0.5)  # "Capturing on" comes a little before packets are taken
            ctx = client_context(min_version=ssl.TLSVersion.TLSv1_3)
            with shut_down_after(harness.IMAP4_SSL(port, ssl_context=ctx)) as c:
                local_port = c.sock.getsockname()[1]
                self.assertEqual(c.login(USER, PASSWORD)[0], "OK")
                self.assertEqual(c.select("INBOX")[0], "OK")
                typ, _ = c.xatom("ID", '("name" "postern-l3-probe")')
                self.assertEqual(typ, "OK")
                c.logout()
            self.p.wait_session_end(local_port)
            time.sleep(0.5)  # let the last packets reach the capture file
        finally:
            if cap.poll() is None:
                cap.send_signal(signal.SIGINT)
                try:
                    cap.wait(10)
                except subprocess.TimeoutExpired:
                    cap.kill()
                    cap.wait()
        with open(errpath, errors="replace") as f:
            captured = f.read()
        m = re.search(r"Packets captured: (\d+)|(\d+) packets? captured", captured)
        self.assertTrue(os.path.getsize(pcap) > 0, captured)
        with open(pcap, "rb") as f:
            raw = f.read()
        # the captured leg is the encrypted one
        self.assertNotIn(b"SELECT INBOX", raw)
        self.assertNotIn(b"postern-l3-probe", raw)

        decode = ["-d", "tcp.port==%d,tls" % port, "-d", "tls.port==%d,imap" % port]

        def requests(extra):
            r = run([tshark, "-r", pcap, *decode, *extra, "-Y", "imap", "-T", "fields", "-e", "imap.request"],
                    timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            return r.stdout.decode("utf-8", "replace")

        with_keys = requests(["-o", "tls.keylog_file:%s" % self.keylog])
        self.assertIn("SELECT INBOX", with_keys, "tshark with the key log (%s packets):\n%s"
                      % (m.group(1) or m.group(2) if m else "?", with_keys))
        self.assertIn("postern-l3-probe", with_keys, with_keys)
        self.assertRegex(with_keys, r"LOGIN", with_keys)
        without = requests(["-o", "tls.keylog_file:"])
        # ... although tshark saw the session's TLS application data records
        r = run([tshark, "-r", pcap, *decode, "-o", "tls.keylog_file:", "-Y", "tls.app_data",
                 "-T", "fields", "-e", "frame.number"], timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertGreater(len(r.stdout.split()), 4, "too few TLS application data records in the capture")
        self.assertNotIn("SELECT", without, without)
        self.assertNotIn("postern-l3-probe", without, without)
