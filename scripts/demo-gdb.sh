#!/bin/sh
# The debug mode, end to end, with the built-in guest under the real QEMU:
# scripts/demo-gdb.sh DIR (make demo-gdb).
set -eu
dir=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")/.." && pwd)
export DMLAUNCH_CONFIG=
export DMLAUNCH_QEMU=/usr/libexec/qemu-system-i386
export DMLAUNCH_STATE_DIR="$dir/state" DMLAUNCH_LOG_DIR="$dir/log"
export DMLAUNCH_DEBUG=gdb XEN_DOMAIN_ID=7 LIBXL_DOMID_REUSE_TIMEOUT=0
dmctl="$here/bin/dmctl"

# The toolstack's side: the launcher stays in the background, as under libxl.
"$here/bin/dmlaunch" -name "demo guest" -machine pc -accel tcg -display none \
	-nodefaults -no-user-config -serial pty \
	-drive "file=$dir/boot.img,format=raw,if=floppy" 2> "$dir/qemu-dm.log" &
launcher=$!
trap 'kill -HUP $launcher 2>/dev/null || true' EXIT
i=0
until "$dmctl" list 2>/dev/null | grep -q running; do
	i=$((i + 1)); [ $i -lt 100 ] || { cat "$dir/qemu-dm.log"; exit 1; }
	sleep 0.1
done
sleep 0.5
echo "== the toolstack's log (qemu-dm-<name>.log):"
cat "$dir/qemu-dm.log"
echo "== dmctl list:"
"$dmctl" list
echo "== the guest's console, kept from the first byte:"
cat "$dir/log/dmlaunch-console-7.log"
echo "== gdb, through the debug port (dmctl gdb 7 runs it interactively):"
gdb -q -nx -batch -ex 'set sysroot /' -ex 'set debuginfod enabled off' \
	-ex "target remote $("$dmctl" list --json | sed -n 's/.*"gdb": "\(.*\)".*/\1/p')" \
	-ex 'info threads' -ex detach /usr/libexec/qemu-system-i386 2>&1 | grep -vE '^(warning|Reading)'
echo "== QEMU's monitor (dmctl monitor 7 -c 'info status'):"
"$dmctl" monitor 7 -c 'info status'
echo "== the toolstack destroys the domain (SIGHUP to the launcher):"
kill -HUP $launcher
wait $launcher && status=0 || status=$?
trap - EXIT
tail -2 "$dir/qemu-dm.log"
echo "== launcher exit status $status; dmctl list now:"
"$dmctl" list
