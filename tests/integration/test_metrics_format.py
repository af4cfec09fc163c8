"""The metrics text as Prometheus reads it, `-V`, and client 8-bit bytes in
JSON logs.

The text is checked by Prometheus' own `promtool check metrics`; every
configured service has exactly one series, the longest name the
configuration accepts (64 characters) included, with one process and with
workers; `postern_build_info`, `postern_start_time_seconds` and the reload
gauges; `/metrics?query` and `HEAD /metrics` as a scraper sends them.
"""

import re
import shutil
import signal
import socket
import time
import unittest

from harness import (
    POSTERN,
    SLOW,
    PosternTestCase,
    free_port,
    imap_cmd,
    imap_login,
    plain_connect,
    run,
    svc,
    tls_connect,
    version,
    wait_until,
)
from test_log_safety import json_objects, log_bytes
from test_commandlog import LogCase
from test_observability import read_to_close, scrape

LONG_NAME = "s" * 63 + "L"  # 64 characters, the longest section name
PROMTOOL = shutil.which("promtool")


def openssl_runtime_version():
    """The version of the OpenSSL library the openssl command runs with
    (the same libcrypto postern links)."""
    out = run(["openssl", "version", "-v"], timeout=10).stdout.decode()
    return out.split()[1]


def raw_http(port, request):
    """Sends REQUEST as it is; the whole response up to the server's close."""
    with socket.create_connection(("127.0.0.1", port), timeout=5 * SLOW) as s:
        s.sendall(request)
        data = read_to_close(s, 5 * SLOW)
    assert data is not None, "metrics connection not closed after %r" % request
    return data


class MetricsFormat(PosternTestCase):
    NEEDS_SERVERS = False

    def start(self, workers=1, services=None):
        mport = free_port()
        services = services or [(LONG_NAME, svc("imap", tls="off", backend="127.0.0.1:%d" % free_port())),
                                ("short", svc("imap", tls="off", backend="127.0.0.1:%d" % free_port()))]
        p = self.postern(services, {"metrics": "127.0.0.1:%d" % mport, "workers": workers})
        if workers > 1:
            p.wait_for(contains="worker %d started" % workers)
        return p, mport

    def promtool_ok(self, body):
        r = run([PROMTOOL, "check", "metrics"], input=body, timeout=30)
        out = (r.stdout + r.stderr).decode("utf-8", "replace")
        self.assertEqual(r.returncode, 0, "promtool check metrics:\n%s\n--- text:\n%s" % (out, body.decode()[:4000]))

    @unittest.skipUnless(PROMTOOL, "promtool (Debian package prometheus) not installed")
    def test_promtool_accepts_the_text(self):
        p, mport = self.start()
        for _ in range(3):  # every kind of counter has a value
            plain_connect(p.port(LONG_NAME)).close()
        s = scrape(mport)
        self.assertEqual(s.status, 200)
        self.promtool_ok(s.body)

    def test_longest_service_name_one_series_per_service(self):
        for workers in (1, 2):
            with self.subTest(workers=workers):
                p, mport = self.start(workers)
                for _ in range(4):
                    plain_connect(p.port(LONG_NAME)).close()
                last = [None]

                def counted():
                    last[0] = scrape(mport)
                    return last[0].get("postern_connections_total", service=LONG_NAME) == 4

                wait_until(counted, 5, msg="4 connections counted for the 64-character service",
                           detail=lambda: last[0].text if last[0] else "")
                for family in ("postern_connections_total", "postern_connections_active"):
                    names = [dict(k[1])["service"] for k in last[0].samples if k[0] == family]
                    self.assertEqual(sorted(names), sorted([LONG_NAME, "short"]), last[0].text)
                self.assertEqual(last[0].bad, [])
                p.stop()

    def test_build_info_and_start_time(self):
        before = time.time()
        p, mport = self.start()
        after = time.time()
        s = scrape(mport)
        info = [dict(k[1]) for k in s.samples if k[0] == "postern_build_info"]
        self.assertEqual(info, [{"version": version(), "openssl": openssl_runtime_version()}], s.text)
        self.assertEqual(s.type.get("postern_build_info"), "gauge")
        start = s.get("postern_start_time_seconds")
        self.assertIsNotNone(start, s.text)
        self.assertTrue(int(before) <= start <= after + 1, (before, start, after))

    def test_reload_outcome_with_and_without_workers(self):
        for workers in (1, 2):
            with self.subTest(workers=workers):
                p, mport = self.start(workers)
                s = scrape(mport)
                self.assertEqual(s.get("postern_config_reload_success"), 1, s.text)
                loaded = s.get("postern_config_last_reload_timestamp_seconds")
                self.assertEqual(loaded, s.get("postern_start_time_seconds"), s.text)
                good = open(p.conf).read()
                with open(p.conf, "a") as f:
                    f.write("no_such_key = 1\n")
                p.signal(signal.SIGHUP)
                p.wait_for(level="error", contains="reload refused")
                s = scrape(mport)
                self.assertEqual(s.get("postern_config_reload_success"), 0, s.text)
                self.assertEqual(s.get("postern_config_last_reload_timestamp_seconds"), loaded, s.text)
                time.sleep(1.1)  # the timestamp has whole seconds
                with open(p.conf, "w") as f:
                    f.write(good)
                at = time.time()
                p.signal(signal.SIGHUP)
                p.wait_for(contains="configuration reloaded")
                s = scrape(mport)
                self.assertEqual(s.get("postern_config_reload_success"), 1, s.text)
                self.assertGreaterEqual(s.get("postern_config_last_reload_timestamp_seconds"), int(at), s.text)
                p.stop()

    def test_query_string_and_head(self):
        p, mport = self.start()
        for path in ("/metrics?x", "/metrics?name[]=postern_build_info"):
            with self.subTest(path=path):
                s = scrape(mport, path)
                self.assertEqual(s.status, 200, s.body)
                self.assertIsNotNone(s.get("postern_build_info", version=version(),
                                           openssl=openssl_runtime_version()), s.text)
        get = raw_http(mport, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        head = raw_http(mport, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        get_head, _, get_body = get.partition(b"\r\n\r\n")
        head_head, sep, head_body = head.partition(b"\r\n\r\n")
        self.assertTrue(sep and head_head.startswith(b"HTTP/1.0 200 "), head)
        self.assertEqual(head_body, b"", "HEAD answered with a body")
        length = re.search(rb"(?im)^content-length: *(\d+)\r?$", head_head)
        self.assertIsNotNone(length, head_head)
        self.assertEqual(int(length.group(1)), len(get_body))  # nothing counted between the two
        self.assertIn(b"Content-Type: text/plain; version=0.0.4", head_head)
        self.assertIn(b"Content-Length: %d" % len(get_body), get_head)
        post = raw_http(mport, b"POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n")
        self.assertTrue(post.startswith(b"HTTP/1.0 405 "), post)
        self.assertIn(b"\r\nAllow: GET, HEAD\r\n", post)


class VersionOutput(PosternTestCase):
    NEEDS_SERVERS = False

    def test_version_names_openssl_libev_and_inih(self):
        r = run([POSTERN, "-V"], timeout=10)
        out = r.stdout.decode()
        self.assertEqual(r.returncode, 0, out)
        self.assertIn("postern %s\n" % version(), out)
        ossl = re.search(r"^OpenSSL (\S+) \(built with (\S+)\)$", out, re.M)
        self.assertIsNotNone(ossl, out)
        self.assertEqual(ossl.group(1), openssl_runtime_version())
        self.assertRegex(out, r"(?m)^libev \d+\.\d+ \(built with \d+\.\d+\)$")
        inih = run(["pkg-config", "--modversion", "inih"], timeout=10).stdout.decode().strip()
        self.assertIn("inih (built with %s)\n" % (inih or "unknown"), out)


class JsonLogClientLatin1(LogCase):
    """A client's 8-bit bytes (a Latin-1 folder name in a quoted string,
    after TLS) reach the JSON command log as valid UTF-8 that strict
    parsers read; the session goes on."""

    def test_latin1_folder_name_json_parses(self):
        p = self.start([("imaps", svc("imap"))], level="debug", log_format="json", capture=False)
        s = tls_connect(p.port("imaps"))
        r = imap_login(s)
        r.send(b's1 SELECT "Bo\xeete"\r\n')
        line = r.readline()
        while not line.startswith(b"s1 "):
            line = r.readline()
        self.assertRegex(line, rb"^s1 NO .*mUTF-7")  # Dovecot's answer: the byte reached it
        imap_cmd(r, "n1", "NOOP")  # still served
        imap_cmd(r, "z", "LOGOUT")
        s.close()
        wait_until(lambda: b"Bo" in log_bytes(p), 5, msg="the SELECT in the command log")
        objs = json_objects(log_bytes(p), p.logfile)  # strict UTF-8, one object a line
        shown = [o.get("line") for o in objs if o.get("event") == "command" and "Bo" in o.get("line", "")]
        self.assertEqual(shown, ['s1 SELECT "Bo\\xeete"'], objs[-10:])


if __name__ == "__main__":
    unittest.main()
