#!/usr/bin/env bash
# Usage: debian-rootfs.sh ARCH PACKAGES_FILE OUT_DIR
#
# Unpacks the Debian packages named in PACKAGES_FILE (one a line, # comments)
# for ARCH (amd64, arm64) into OUT_DIR: the base layer of an image, without
# dpkg, a shell or maintainer scripts. Both image builds use it: `make
# images` (no Docker) on this machine, and the Dockerfiles in a Debian stage.
#
# apt runs with a state and cache of its own (under HERALD_CACHE, default
# ~/.cache/herald/apt), so another architecture's package lists never touch
# the machine's apt configuration. Each package's control file goes to
# var/lib/dpkg/status.d/, as in distroless images, so that image scanners
# see the package versions. With ca-certificates, the bundle that its
# maintainer script would build (update-ca-certificates) is assembled from
# the certificates it ships.
set -euo pipefail

arch=${1:?arch}
packages_file=${2:?packages file}
out=${3:?output folder}
mapfile -t packages < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$packages_file")
((${#packages[@]})) || { echo "debian-rootfs: $packages_file names no package" >&2; exit 1; }

cache=${HERALD_CACHE:-$HOME/.cache/herald}/apt/$arch
mkdir -p "$cache/lists/partial" "$cache/archives/partial" "$cache/debs"
touch "$cache/status"
apt_opts=(-o "APT::Architecture=$arch" -o "APT::Architectures::=$arch"
	-o "Dir::State::Lists=$cache/lists" -o "Dir::State::status=$cache/status"
	-o "Dir::Cache=$cache" -o "Dir::Cache::archives=$cache/archives"
	-o "Debug::NoLocking=1" -o "APT::Sandbox::User=root")

# Lists are refreshed once a day: security updates reach the next build.
if [[ -z $(find "$cache/lists" -maxdepth 1 -name '*Packages*' -mmin -1440 -print -quit) ]]; then
	echo "debian-rootfs: apt-get update ($arch)" >&2
	apt-get "${apt_opts[@]}" -qq update >&2
fi
(cd "$cache/debs" && rm -f ./*.deb && apt-get "${apt_opts[@]}" -qq download "${packages[@]/%/:$arch}" >&2)

rm -rf "$out"
mkdir -p "$out/var/lib/dpkg/status.d"
for deb in "$cache"/debs/*.deb; do
	dpkg-deb -x "$deb" "$out"
	name=$(dpkg-deb -f "$deb" Package)
	dpkg-deb -f "$deb" > "$out/var/lib/dpkg/status.d/$name"
done
# Documentation, manuals and lintian overrides are dead weight in an image.
rm -rf "$out/usr/share/doc" "$out/usr/share/man" "$out/usr/share/info" "$out/usr/share/lintian"

if [[ -d $out/usr/share/ca-certificates ]]; then
	mkdir -p "$out/etc/ssl/certs"
	find "$out/usr/share/ca-certificates" -name '*.crt' | LC_ALL=C sort |
		xargs cat > "$out/etc/ssl/certs/ca-certificates.crt"
fi
echo "debian-rootfs: $arch: ${packages[*]} -> $out" >&2
