#!/usr/bin/env bash
# Install what kharness needs on a Debian 12 host, as root: the system
# packages by name from Debian, then a virtualenv (.venv) with the package.
# Safe to run again; it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
	echo "ci/setup.sh: run as root (it installs Debian packages)" >&2
	exit 2
fi

packages=(
	qemu-system-x86 qemu-system-arm ipxe-qemu  # guests
	qemu-efi-aarch64                   # arm64 guests with persistent memory boot through UEFI
	ndctl daxctl e2fsprogs xfsprogs    # --pmem under virtme-ng on the host's root
	binutils                           # readelf: what the guests' copies of those load
	busybox-static                     # the initramfs userland
	mmdebstrap                         # toolchain roots for gcc-14/16 kernels
	gcc make libc6-dev bc kmod         # modules on the host (6.1), depmod
	gcc-aarch64-linux-gnu libc6-dev-arm64-cross  # arm64 helpers
	gcc-arm-linux-gnueabihf libc6-dev-armhf-cross  # armhf helpers
	zstd xz-utils cpio util-linux      # images and chroot builds
	udev                               # virtme-ng's init needs it
	ccache flex bison libelf-dev libssl-dev patch  # kernel builds from source
	meson ninja-build pkg-config libkmod-dev libudev-dev uuid-dev libjson-c-dev \
		libiniparser-dev libkeyutils-dev  # ndctl's dax tests (--suite ndctl)
	python3-venv
	rsync                              # gitlab-ci-local (the pipeline test)
	dropbear-bin openssh-client        # the sshd guest of the SSH target tests
	chromium-headless-shell fonts-dejavu-core  # the dashboard as a browser shows it (its test)
)
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "ci/setup.sh: installing ${missing[*]}"
	apt-get update -q || echo "ci/setup.sh: apt-get update reported errors; trying anyway" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip
fi
# The package and what its tests use (lint, types, the KCIDB schema,
# actionlint), again whenever pyproject.toml changed.
stamp=$(sha256sum pyproject.toml | cut -d' ' -f1)
exec 9>.venv/.kharness-setup.lock   # jobs side by side on one .venv: one installs
flock 9
# A .venv linked from another checkout (the pipeline test's clone) is that
# checkout's: installing here would point its kharness at this tree.
if [ -L .venv ]; then
	:
elif [ "$(cat .venv/.kharness-setup 2>/dev/null)" != "$stamp" ] ||
	! .venv/bin/python -c "import harness, kcidb_io" 2>/dev/null; then
	.venv/bin/pip install -q -e '.[dev]'
	echo "$stamp" >.venv/.kharness-setup
fi

echo "ci/setup.sh: ready (.venv/bin/kharness, .venv/bin/pytest)"
