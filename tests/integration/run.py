#!/usr/bin/python3
"""postern's integration test runner.

    POSTERN=/abs/path/to/postern /usr/bin/python3 tests/integration/run.py [-k SUBSTRING]... [-v]

Generates test certificates, starts a throwaway Dovecot (IMAP, POP3) and an
SMTP server (aiosmtpd) once, runs every tests/integration/test_*.py module
(each test starts its own postern), prints one line per test and ends with
exactly one line `integration: N passed, M failed` (skipped tests are listed
above it and counted in neither). Exit status 1 if anything failed.

POSTERN_ASAN=1: the binary is a sanitizer build; any "ERROR: AddressSanitizer"
or "runtime error:" in its stderr fails the test, and waits are stretched.
POSTERN_KEEP=1: keep the temp dir (logs, configs) for inspection.
"""

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


class Result(unittest.TestResult):
    def __init__(self, verbose):
        super().__init__()
        self.verbose = verbose
        self.passed = []
        self.failed = []  # (test, text)
        self.skipped_ = []
        self._t0 = {}

    def startTest(self, test):
        super().startTest(test)
        self._t0[test.id()] = time.monotonic()

    def _name(self, test):
        return test.id().replace("__main__.", "")

    def _took(self, test):
        test = getattr(test, "test_case", test)  # a subtest: time of its test
        return time.monotonic() - self._t0.get(test.id(), time.monotonic())

    def _postern_logs(self, test):
        out = []
        for p in getattr(test, "_posterns", []) or []:
            text = p.stderr()
            if p.logfile:
                text += "\n[log file %s]\n%s" % (p.logfile, p.log_text())
            tail = "\n".join(text.splitlines()[-40:])
            out.append("--- postern %s (%s), last lines:\n%s" % (p.pid, p.dir, tail))
        return "\n".join(out)

    def addSuccess(self, test):
        super().addSuccess(test)
        # a test can fail in a cleanup after addSuccess? No: cleanups run
        # before the result is reported, failures there come as addError.
        self.passed.append(test)
        print("PASS  %-70s %6.2fs" % (self._name(test), self._took(test)), flush=True)

    def _fail(self, kind, test, err):
        text = self._exc_info_to_string(err, test)
        owner = getattr(test, "test_case", test)
        logs = self._postern_logs(owner) if hasattr(owner, "_posterns") else ""
        self.failed.append((test, text + ("\n" + logs if logs else "")))
        print("%s  %-70s %6.2fs" % (kind, self._name(test), self._took(test)), flush=True)
        if self.verbose:
            print(text + ("\n" + logs if logs else ""), flush=True)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._fail("FAIL", test, err)

    def addError(self, test, err):
        super().addError(test, err)
        self._fail("ERROR", test, err)

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.skipped_.append((test, reason))
        print("SKIP  %-70s (%s)" % (self._name(test), reason), flush=True)

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self.passed.append(test)

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self.failed.append((test, "unexpected success"))

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._fail("FAIL" if issubclass(err[0], test.failureException) else "ERROR", subtest, err)


def flatten(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from flatten(t)
        else:
            yield t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-k", action="append", default=[], help="only tests whose id contains this (repeatable)")
    ap.add_argument("-v", action="store_true", help="print failure details as they happen")
    args = ap.parse_args()

    postern = os.environ.get("POSTERN")
    if not postern or not os.path.isabs(postern):
        print("run.py: set POSTERN to the absolute path of the postern binary", file=sys.stderr)
        print("integration: 0 passed, 1 failed")
        return 1
    if not os.access(postern, os.X_OK):
        print("run.py: %s is not an executable file" % postern, file=sys.stderr)
        print("integration: 0 passed, 1 failed")
        return 1

    def on_signal(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)  # even if started with SIGINT ignored
    signal.signal(signal.SIGHUP, on_signal)

    import harness

    t0 = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="pit-", dir="/tmp")
    os.chmod(tmp, 0o755)
    result = Result(args.v)
    env = None
    interrupted = False
    try:
        print("integration: postern %s%s, temp dir %s" % (postern, " (ASan+UBSan)" if harness.ASAN else "", tmp), flush=True)
        try:
            env = harness.setup_env(tmp)
        except Exception:
            traceback.print_exc()
            print("integration: could not start the test servers")
            print("integration: 0 passed, 1 failed")
            return 1
        if env.missing:
            print("integration: OFFLINE, not installed: %s; tests that need them are SKIPPED" % env.missing, flush=True)
        else:
            print(
                "integration: dovecot imap=%d pop3=%d unix=%s, smtp=%d (%.1fs)"
                % (env.imap_port, env.pop3_port, env.imap_socket, env.smtp_port, time.monotonic() - t0),
                flush=True,
            )
        if not harness.have_ipv6():
            print("integration: WARNING: ::1 is not available on this machine; IPv6 tests are SKIPPED", flush=True)

        loader = unittest.TestLoader()
        suite = loader.discover(HERE, pattern="test_*.py", top_level_dir=HERE)
        tests = list(flatten(suite))
        load_errors = [t for t in tests if t.__class__.__name__ in ("_FailedTest", "ModuleImportFailure")]
        if args.k:
            tests = [t for t in tests if any(k in t.id() for k in args.k) or t in load_errors]
        run_suite = unittest.TestSuite(tests)
        try:
            run_suite.run(result)
        except KeyboardInterrupt:
            interrupted = True
            print("integration: interrupted", flush=True)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        harness.kill_leftovers()
        if env is not None:
            env.stop()
        if os.environ.get("POSTERN_KEEP") == "1" or False:
            print("integration: kept %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    if result.failed:
        print("\n==== failures ====")
        for test, text in result.failed:
            print("---- %s\n%s" % (test.id(), text))
    for test, reason in result.skipped_:
        print("integration: SKIPPED %s: %s" % (test.id(), reason))
    n_failed = len(result.failed) + (1 if interrupted else 0)
    print("integration: took %.0fs" % (time.monotonic() - t0))
    print("integration: %d passed, %d failed" % (len(result.passed), n_failed), flush=True)
    return 1 if n_failed else 0


if __name__ == "__main__":
    sys.exit(main())
