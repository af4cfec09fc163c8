#!/usr/bin/python3
"""Checks the include graph of src/*.c and include/postern/*.h against the
layers below: a module (src/NAME.c with include/postern/NAME.h) may include
its own layer's headers and those of lower layers, never a higher layer's,
and the graph has no circle. Prints each offending edge and exits 1; ends
with one line "layers: N passed, M failed" for tests/run-all.sh (N: modules
whose includes all keep to the layers; M: modules with an offending
include, plus one for each circle).

A new file goes into LAYERS in the same commit. Until then a name with a
known prefix (FAMILIES: session_*, proto_*, tls_*, ...) takes its family's
layer, and any other name is named in a note and left out of the layer
check (never out of the circle check), so that merging a branch with a new
file cannot break the build.

Usage: tests/layers.py [ROOT]   (ROOT: the repository, default: this one)
"""
import os
import re
import sys

# Lowest first. Each layer says what it is for; a module may use its own
# layer and those listed before it.
LAYERS = [
    ("base", "bytes, text and addresses; knows no protocol and no configuration",
     ["buf", "shared", "netaddr", "log_text", "log_json", "log_syslog", "capture",
      "oauth2_store", "oauth2_json", "oauth2_sasl", "sni_index", "cert_map"]),
    ("transport", "sockets, TLS and PROXY headers, from plain inputs",
     ["endpoint", "relay", "tls", "tls_conf", "tls_binding", "tickets", "proxyproto",
      "resolver", "oauth2_http", "oauth2_store_async", "cert_store"]),
    ("adapters", "the protocols, pure: bytes in, verdicts out",
     ["proto_kind", "proto", "proto_util", "proto_cmd", "proto_imap", "proto_pop3",
      "proto_smtp", "proto_raw", "proto_auth", "imap_token", "imap_redact", "imap_id",
      "imap_capability", "imap_client_role", "imap_login", "proto_login", "secrets"]),
    ("config", "the configuration and what is set up straight from it",
     ["config", "config_reader", "config_values", "config_keys", "config_tls", "config_advice",
      "config_oauth2", "oauth2_login", "log", "metrics"]),
    ("session", "one connection from accept to close",
     ["server", "session", "session_backend", "session_client", "session_login", "observe",
      "filter"]),
    ("process", "listeners, the daemon, its workers, the command line",
     ["listener", "daemon", "workers", "sd_notify", "control", "oauth2_authorize", "main"]),
]

# Layers of files not (yet) in LAYERS, by the start of their name.
FAMILIES = [
    ("log_", "base"),
    ("tls_", "transport"),
    ("proto_", "adapters"), ("imap_", "adapters"), ("pop3_", "adapters"),
    ("smtp_", "adapters"),
    ("config_", "config"),
    ("session_", "session"),
    ("daemon_", "process"), ("workers_", "process"), ("sd_", "process"),
]

INCLUDE = re.compile(r'^\s*#\s*include\s*[<"]postern/([A-Za-z0-9_]+)\.h[>"]')


def modules(root):
    """Module name -> list of (file, line number, included module)."""
    found = {}
    for sub, ext in (("src", ".c"), (os.path.join("include", "postern"), ".h")):
        d = os.path.join(root, sub)
        for name in sorted(os.listdir(d)):
            if not name.endswith(ext):
                continue
            mod = name[: -len(ext)]
            path = os.path.join(sub, name)
            edges = found.setdefault(mod, [])
            with open(os.path.join(d, name), encoding="utf-8", errors="replace") as f:
                for n, line in enumerate(f, 1):
                    m = INCLUDE.match(line)
                    if m and m.group(1) != mod:
                        edges.append((path, n, m.group(1)))
    return found


def circles(graph):
    """Each group of modules that reach one another (Tarjan's strongly
    connected components of more than one module): (the sorted group, one
    circle through its first module, [a, b, ..., a])."""
    index, low, stack, on, groups = {}, {}, [], set(), []

    def connect(m):
        index[m] = low[m] = len(index)
        stack.append(m)
        on.add(m)
        for n in sorted(graph.get(m, ())):
            if n not in index:
                connect(n)
                low[m] = min(low[m], low[n])
            elif n in on:
                low[m] = min(low[m], index[n])
        if low[m] == index[m]:
            group = set()
            while True:
                n = stack.pop()
                on.discard(n)
                group.add(n)
                if n == m:
                    break
            if len(group) > 1:
                groups.append(group)

    for m in sorted(graph):
        if m not in index:
            connect(m)
    result = []
    for group in groups:
        # The shortest way from the group's first module back to itself.
        start = min(group)
        prev, todo = {}, [start]
        while todo and start not in prev:
            nxt = []
            for m in todo:
                for n in sorted(graph.get(m, ())):
                    if n in group and n not in prev:
                        prev[n] = m
                        nxt.append(n)
            todo = nxt
        path, m = [start], prev[start]
        while m != start:
            path.append(m)
            m = prev[m]
        path.append(start)
        result.append((sorted(group), path[::-1]))
    return sorted(result)


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    rank, layer_name = {}, []
    for i, (name, _, mods) in enumerate(LAYERS):
        layer_name.append(name)
        for m in mods:
            rank[m] = i
    found = modules(root)
    for m in sorted(found):
        if m in rank:
            continue
        family = [layer for prefix, layer in FAMILIES if m.startswith(prefix)]
        if family:
            rank[m] = layer_name.index(family[0])
            print(f"layers: note: {m} is not in LAYERS of tests/layers.py; "
                  f"layer '{family[0]}' by its name")
        else:
            print(f"layers: note: {m} is not in LAYERS of tests/layers.py; "
                  f"its includes are not checked until it is added to its layer")
    graph = {}
    bad_modules = set()
    for m, edges in sorted(found.items()):
        for path, n, dep in edges:
            graph.setdefault(m, set()).add(dep)
            if dep not in found:
                print(f"{path}:{n}: includes postern/{dep}.h, which does not exist")
                bad_modules.add(m)
                continue
            if m not in rank or dep not in rank:
                continue
            a, b = rank[m], rank[dep]
            if b > a:
                print(f"{path}:{n}: {m} ({layer_name[a]}) -> {dep} ({layer_name[b]}): "
                      f"a lower layer includes a higher one")
                bad_modules.add(m)
    passed, failed = len(found) - len(bad_modules), len(bad_modules)
    for group, circle in circles(graph):
        print("layers: include circle: " + " -> ".join(circle) +
              (f" (the modules {', '.join(group)} all reach one another)" if len(group) > 2 else ""))
        failed += 1
    print(f"layers: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
