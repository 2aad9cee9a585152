#!/bin/sh
# Install what the tests and the demo need on a Debian machine: the real
# QEMU builds, gdbserver and gdb (which also reads cores), strace and
# valgrind for the strace and memcheck modes, groff to render the man
# pages, and logrotate to rotate console logs under a running guest.
# Installs only what is missing; exits 0 when everything is there.
set -eu

need=""
have() { [ -x "$1" ] || command -v "$1" >/dev/null 2>&1; }
have /usr/libexec/qemu-system-i386 || need="$need qemu-system-x86"
have /usr/libexec/xen-qemu-system-i386 || need="$need qemu-system-xen"
have gdbserver || need="$need gdbserver"
have gdb || need="$need gdb"
have strace || need="$need strace"
have valgrind || need="$need valgrind"
have groff || need="$need groff-base"
have dpkg-divert || need="$need dpkg"
have logrotate || have /usr/sbin/logrotate || need="$need logrotate"

if [ -z "$need" ]; then
	echo "deps.sh: everything is installed"
	exit 0
fi
if [ "$(id -u)" != 0 ]; then
	echo "deps.sh: missing:$need; run as root, or: sudo apt-get install$need" >&2
	exit 1
fi
echo "deps.sh: installing$need"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $need
