#!/bin/sh
# Generate certificates for postern's tests and demo with the openssl CLI.
#
#   gen-certs.sh test DIR        a test CA and certificates signed by it:
#       ca.pem ca.key            the test CA (ECDSA P-256)
#       server.pem server.key    CN=localhost, SAN localhost 127.0.0.1 ::1 (ECDSA P-256)
#       server2.pem server2.key  a second, different server cert for the same
#                                names (RSA 2048), for the SIGHUP swap test
#       other.pem other.key      CN=other.test, SAN other.test (SNI selection)
#       client.pem client.key    a client certificate (clientAuth)
#   gen-certs.sh selfsigned DIR  cert.pem key.pem: one self-signed certificate
#                                for localhost/127.0.0.1/::1 (the demo)
#
# Everything is valid for 30 days from now. Existing files are overwritten.
set -eu

mode=${1:?usage: gen-certs.sh test|selfsigned DIR}
dir=${2:?usage: gen-certs.sh test|selfsigned DIR}
mkdir -p "$dir"
cd "$dir"
umask 077

SAN='subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1'

leaf() { # name keyalg subject san eku
	name=$1 alg=$2 subj=$3 san=$4 eku=$5
	case $alg in
	ec) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$name.key" 2>/dev/null ;;
	rsa) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$name.key" 2>/dev/null ;;
	esac
	openssl req -new -key "$name.key" -subj "$subj" -out "$name.csr"
	printf '%s\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=%s\n' \
		"$san" "$eku" >"$name.ext"
	openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
		-days 30 -sha256 -extfile "$name.ext" -out "$name.pem" 2>/dev/null
	rm -f "$name.csr" "$name.ext"
}

case $mode in
test)
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null
	openssl req -new -x509 -key ca.key -subj '/CN=postern test CA' -days 30 -sha256 \
		-addext 'basicConstraints=critical,CA:TRUE' \
		-addext 'keyUsage=critical,keyCertSign,cRLSign' -out ca.pem
	leaf server ec /CN=localhost "$SAN" serverAuth
	leaf server2 rsa /CN=localhost "$SAN" serverAuth
	leaf other ec /CN=other.test 'subjectAltName=DNS:other.test' serverAuth
	leaf client ec '/CN=postern test client' 'subjectAltName=DNS:client.test' clientAuth
	rm -f ca.srl
	;;
selfsigned)
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout key.pem -out cert.pem -days 30 -sha256 -subj /CN=localhost \
		-addext "$SAN" -addext 'basicConstraints=critical,CA:FALSE' \
		-addext 'extendedKeyUsage=serverAuth' 2>/dev/null
	;;
*)
	echo "usage: gen-certs.sh test|selfsigned DIR" >&2
	exit 2
	;;
esac
chmod 0644 ./*.pem
chmod 0600 ./*.key 2>/dev/null || true
[ ! -f key.pem ] || chmod 0600 key.pem
