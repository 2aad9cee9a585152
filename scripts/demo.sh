#!/bin/sh
# Run the demo guest through dmlaunch: scripts/demo.sh DIR [dry]
set -eu
dir=$1
here=$(cd "$(dirname "$0")/.." && pwd)
export DMLAUNCH_CONFIG=
export DMLAUNCH_QEMU=/usr/libexec/qemu-system-i386
export DMLAUNCH_STATE_DIR="$(cd "$dir" && pwd)/state"
export LIBXL_DOMID_REUSE_TIMEOUT=0
if [ "${2:-}" = dry ]; then export DMLAUNCH_DRY_RUN=1; fi
set +e
"$here/bin/dmlaunch" -name "demo guest" -machine pc -accel tcg -display none \
	-nodefaults -no-user-config -serial stdio \
	-drive "file=$dir/boot.img,format=raw,if=floppy" \
	-device isa-debug-exit,iobase=0xf4,iosize=0x04
status=$?
set -e
if [ "${2:-}" != dry ]; then
	# The guest ends QEMU through isa-debug-exit: status 0 becomes 1.
	echo "== QEMU exited with status $status (1 = the guest said 0 through isa-debug-exit)"
	[ "$status" = 1 ] || exit 1
fi
