#!/bin/bash
# make deb: the Debian package, built in a copy of the source under
# build/deb (the repository's top level stays as it is: packaging/debian is
# copied into place there), with dpkg-buildpackage -us -uc -b. The .deb is
# left in build/deb and copied to the top level, for
#     apt install ./postern_*.deb
# DEB_BUILD_OPTIONS (e.g. nocheck) passes through.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
me=${0##*/}

for tool in dpkg-buildpackage dh; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "$me: $tool is missing: run packaging/deps.sh (as root), or apt-get install build-essential dpkg-dev debhelper" >&2
		exit 1
	fi
done
version=$(dpkg-parsechangelog -l packaging/debian/changelog -S Version)
out=build/deb
tree=$out/postern-$version
rm -rf "$out"
mkdir -p "$tree"
# The source as it is now (committed or not), without build products.
tar -c --exclude=./build --exclude=./.git --exclude='./postern_*' --exclude=__pycache__ . |
	tar -x -C "$tree"
rm -rf "$tree/debian"
cp -a packaging/debian "$tree/debian"
(cd "$tree" && dpkg-buildpackage -us -uc -b) >"$out/build.log" 2>&1 || {
	echo "$me: dpkg-buildpackage failed; the end of $out/build.log:" >&2
	tail -n 30 "$out/build.log" >&2
	exit 1
}
rm -f ./postern_*.deb
cp "$out"/postern_"$version"_*.deb .
ls "$out"/*.deb
