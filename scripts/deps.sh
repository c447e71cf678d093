#!/usr/bin/env bash
# Installs what `make test` and `make demo` need on a Debian/Ubuntu host, and nothing
# that is already there. Safe to run again. Packages come from the host's own apt sources.
set -euo pipefail

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }
want() { # want COMMAND PACKAGE: install PACKAGE when COMMAND is missing
	have "$1" || need_pkgs+=("$2")
}

want qemu-system-x86_64 qemu-system-x86
# arm64 guests (lab up --arch arm64, and their test package scenarios/suite/arm64).
want qemu-system-aarch64 qemu-system-arm
want socat socat
want xz xz-utils
want ssh openssh-client
want sshd openssh-server
want apt-get apt
want dpkg-deb dpkg
want gcc gcc
# Wine is the Windows side of the `pe` format (issue: the Windows personality).
want wine wine
[ -x /usr/lib/wine/wine64 ] || need_pkgs+=(wine64)
# qemu-user runs foreign-architecture ELF files for lab files' formats (and their tests).
want qemu-aarch64-static qemu-user-static
# A headless X server and an X clipboard client: the test that clip.exe reaches the host's
# clipboard when the host has a desktop (pefixtures TestHostClipboard).
want Xvfb xvfb
want xclip xclip
[ -e /usr/share/qemu/qboot.rom ] || need_pkgs+=(qemu-system-data)
# The Debian guest image (lab image build --distro debian, scenarios/debiansuite):
# mmdebstrap builds the root file system, mkfs.ext4 -d writes it to a disk (from a
# tarball through libarchive when not root), qemu-img makes the qcow2.
want mmdebstrap mmdebstrap
want mkfs.ext4 e2fsprogs
want qemu-img qemu-utils
[ "$(id -u)" = 0 ] || ls /usr/lib/x86_64-linux-gnu/libarchive.so.13 >/dev/null 2>&1 || need_pkgs+=(libarchive13)

if [ ${#need_pkgs[@]} -gt 0 ]; then
	echo "deps: installing ${need_pkgs[*]}" >&2
	sudo=""
	if [ "$(id -u)" != 0 ]; then
		have sudo || { echo "deps: need root or sudo to install: ${need_pkgs[*]}" >&2; exit 1; }
		sudo="sudo -n"
	fi
	export DEBIAN_FRONTEND=noninteractive
	$sudo apt-get update -qq
	$sudo apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

# The host sshd package enables a service on install; lab only runs its own throwaway sshd.
if ! have go; then
	echo "deps: Go is not installed; install Go >= $(sed -n 's/^go //p' "$(dirname "$0")/../go.mod") and retry" >&2
	exit 1
fi
go mod download
