"""Certificates for hosting tests and `make bench-sni`, made in seconds with
python3-cryptography: one CA and intermediate (ECDSA P-256) and leaves they
sign, written as combined files or NAME.pem + NAME.key."""
import datetime
import hashlib
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DAY = datetime.timedelta(days=1)


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class Pki:
    """A CA and one intermediate (ECDSA P-256), and leaves they sign."""

    def __init__(self):
        now = datetime.datetime.utcnow()
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca = self._cert(_name("Hosting Test CA"), _name("Hosting Test CA"), self.ca_key.public_key(),
                             self.ca_key, now - DAY, now + 3650 * DAY, ca=True)
        self.int_key = ec.generate_private_key(ec.SECP256R1())
        self.inter = self._cert(_name("Hosting Test Intermediate"), self.ca.subject, self.int_key.public_key(),
                                self.ca_key, now - DAY, now + 3650 * DAY, ca=True)
        self.leaf_key = ec.generate_private_key(ec.SECP256R1())  # shared by the bulk: speed
        self.inter_pem = self.inter.public_bytes(serialization.Encoding.PEM)

    @staticmethod
    def _cert(subject, issuer, pub, signer, start, end, ca=False, names=None, serial=None):
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(pub)
             .serial_number(serial or x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if names:
            b = b.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        return b.sign(signer, hashes.SHA256())

    def leaf(self, names, cn=None, key=None, days=90, expired_days=0):
        """(chain PEM: leaf + intermediate, key PEM, leaf SHA-256 of DER)."""
        now = datetime.datetime.utcnow()
        key = key or self.leaf_key
        start = now - DAY - expired_days * DAY
        end = now + days * DAY if not expired_days else now - expired_days * DAY
        c = self._cert(_name(cn or names[0]), self.inter.subject, key.public_key(), self.int_key, start, end,
                       names=names)
        return (c.public_bytes(serialization.Encoding.PEM) + self.inter_pem, key_pem(key),
                hashlib.sha256(c.public_bytes(serialization.Encoding.DER)).hexdigest())


def write(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600)
    os.rename(tmp, path)


def key_pem(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
