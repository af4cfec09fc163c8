#!/usr/bin/python3
"""tests/bench/sni_gen.py DIR N: N ECDSA P-256 and N RSA-2048 certificates
for `make bench-sni`, one name each (mail.cNNNNNN.bench.test, the RSA one
with the same name), signed by one shared intermediate, as combined files
(chain + key) DIR/eNNNNNN.pem and DIR/rNNNNNN.pem, and DIR/names (the
names, one a line). Leaves share one key per type: generating stays fast,
and postern still reads and holds every file's key on its own."""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from sni_pki import Pki, write  # noqa: E402


def main():
    d, n = sys.argv[1], int(sys.argv[2])
    os.makedirs(d, exist_ok=True)
    pki = Pki()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    names = []
    for i in range(n):
        name = "mail.c%06d.bench.test" % i
        names.append(name)
        for prefix, key in (("e", None), ("r", rsa_key)):
            chain, kp, _ = pki.leaf([name], key=key)
            write(os.path.join(d, "%s%06d.pem" % (prefix, i)), chain + kp)
    with open(os.path.join(d, "names"), "w") as f:
        f.write("\n".join(names) + "\n")


if __name__ == "__main__":
    main()
