#!/bin/sh
# Install dmlaunch at the device-model path the Xen toolstack execs, moving
# the real QEMU aside to <path>.distrib (a dpkg diversion when dpkg owns
# it), and dmctl, the man pages, a commented settings file and the
# logrotate snippet for the console logs. Idempotent; honours DESTDIR.
# Undo with scripts/uninstall.sh.
set -eu

usage() {
	cat <<USAGE
Usage: scripts/install.sh [--dm-path PATH] [--bindir DIR] [--mandir DIR]
                          [--dmlaunch BIN] [--dmctl BIN]

  --dm-path PATH  the device model the toolstack execs (default: the first of
                  /usr/libexec/xen-qemu-system-i386 (Debian) and
                  /usr/lib/xen/bin/qemu-system-i386 (upstream Xen) that exists)
  --bindir DIR    where dmctl goes (default /usr/sbin)
  --mandir DIR    man pages (default /usr/share/man)
  --dmlaunch BIN, --dmctl BIN   the built binaries (default bin/dmlaunch, bin/dmctl)

DESTDIR=/some/root installs into that tree instead of /.
USAGE
}

here=$(cd "$(dirname "$0")/.." && pwd)
dm_path=""
bindir=/usr/sbin
mandir=/usr/share/man
dmlaunch_bin="$here/bin/dmlaunch"
dmctl_bin="$here/bin/dmctl"
while [ $# -gt 0 ]; do
	case "$1" in
	--dm-path) dm_path=$2; shift 2 ;;
	--bindir) bindir=$2; shift 2 ;;
	--mandir) mandir=$2; shift 2 ;;
	--dmlaunch) dmlaunch_bin=$2; shift 2 ;;
	--dmctl) dmctl_bin=$2; shift 2 ;;
	-h|--help) usage; exit 0 ;;
	*) echo "install.sh: unknown argument '$1'; see --help" >&2; exit 2 ;;
	esac
done

root=${DESTDIR:-}
record_dir="$root/var/lib/dmlaunch"
record="$record_dir/install.record"

die() { echo "install.sh: $*" >&2; exit 1; }

# mkdirp is mkdir -p that remembers the directories it creates, outermost
# first, so that uninstall.sh removes exactly those.
created=""
mkdirp() {
	d=$1
	missing=""
	while [ ! -d "$d" ]; do
		missing="$d
$missing"
		d=$(dirname "$d")
	done
	[ -n "$missing" ] || return 0
	mkdir -p "$1"
	created="$created$missing"
}
say() { echo "install.sh: $*"; }

for b in "$dmlaunch_bin" "$dmctl_bin"; do
	[ -x "$b" ] || die "$b is not built; run 'make build' first"
done

# A previous install decides the path: never divert twice.
if [ -f "$record" ]; then
	recorded=$(sed -n 's/^dm_path=//p' "$record")
	if [ -n "$dm_path" ] && [ "$dm_path" != "$recorded" ]; then
		die "already installed at $recorded; run scripts/uninstall.sh first to move it to $dm_path"
	fi
	dm_path=$recorded
fi

if [ -z "$dm_path" ]; then
	for p in /usr/libexec/xen-qemu-system-i386 /usr/lib/xen/bin/qemu-system-i386; do
		if [ -e "$root$p" ]; then dm_path=$p; break; fi
	done
	[ -n "$dm_path" ] || die "no device model found at /usr/libexec/xen-qemu-system-i386 or /usr/lib/xen/bin/qemu-system-i386 under '${root:-/}'; install qemu-system-xen, or give --dm-path"
fi
case "$dm_path" in /*) ;; *) die "--dm-path must be absolute" ;; esac

target="$root$dm_path"
distrib="$target.distrib"

dpkg_args=""
if [ -n "$root" ]; then dpkg_args="--root=$root"; fi
dpkg_owns() {
	command -v dpkg-query >/dev/null 2>&1 || return 1
	[ -d "$root/var/lib/dpkg/info" ] || return 1
	dpkg-query --admindir="$root/var/lib/dpkg" -S "$dm_path" >/dev/null 2>&1
}

if [ ! -f "$record" ]; then
	if [ -e "$distrib" ]; then
		die "$distrib exists but dmlaunch has no install record; move it back to $target, or remove it, then run again"
	fi
	if [ -e "$target" ] && cmp -s "$target" "$dmlaunch_bin"; then
		die "$target is already dmlaunch but no record says where the real QEMU went; reinstall the QEMU package first"
	fi
	if [ -e "$target" ] && dpkg_owns; then
		method=dpkg-divert
		# shellcheck disable=SC2086
		dpkg-divert $dpkg_args --local --rename --divert "$dm_path.distrib" --add "$dm_path" >/dev/null
		say "diverted $dm_path to $dm_path.distrib (dpkg-divert --local)"
	elif [ -e "$target" ]; then
		method=rename
		mv "$target" "$distrib"
		say "moved $dm_path to $dm_path.distrib"
	else
		method=new
		mkdirp "$(dirname "$target")"
		say "nothing at $dm_path yet: dmlaunch will find the real QEMU at the known paths or DMLAUNCH_QEMU"
	fi
	mkdirp "$record_dir"
	{
		echo "# written by dmlaunch's scripts/install.sh; read by scripts/uninstall.sh"
		echo "dm_path=$dm_path"
		echo "method=$method"
		echo "bindir=$bindir"
		echo "mandir=$mandir"
	} > "$record.new"
	mv "$record.new" "$record"
fi

# Replace the binary atomically: the toolstack may exec it at any moment.
install -m 0755 "$dmlaunch_bin" "$target.dmlaunch-new"
mv -f "$target.dmlaunch-new" "$target"
say "installed dmlaunch at $dm_path"

mkdirp "$root$bindir"
install -m 0755 "$dmctl_bin" "$root$bindir/dmctl.new"
mv -f "$root$bindir/dmctl.new" "$root$bindir/dmctl"
say "installed dmctl at $bindir/dmctl"

for page in "$here"/docs/*.8; do
	[ -f "$page" ] || continue
	mkdirp "$root$mandir/man8"
	install -m 0644 "$page" "$root$mandir/man8/$(basename "$page")"
	say "installed man page $mandir/man8/$(basename "$page")"
done

conf="$root/etc/dmlaunch/dmlaunch.conf"
if [ ! -e "$conf" ]; then
	mkdirp "$(dirname "$conf")"
	install -m 0644 "$here/scripts/dmlaunch.conf" "$conf"
	say "installed the settings file /etc/dmlaunch/dmlaunch.conf (everything off)"
fi

# Console logs grow for as long as a guest writes; dmlaunch reopens a
# rotated log by itself, so the snippet needs no signal. An operator's
# changes to it are kept, as uninstall.sh keeps them.
rotate="$root/etc/logrotate.d/dmlaunch"
if [ ! -e "$rotate" ]; then
	mkdirp "$(dirname "$rotate")"
	install -m 0644 "$here/scripts/dmlaunch.logrotate" "$rotate.new"
	mv -f "$rotate.new" "$rotate"
	say "installed the logrotate snippet /etc/logrotate.d/dmlaunch (console logs)"
elif ! cmp -s "$rotate" "$here/scripts/dmlaunch.logrotate"; then
	say "kept /etc/logrotate.d/dmlaunch: it was changed (dmlaunch's own is scripts/dmlaunch.logrotate)"
fi

printf '%s' "$created" | while IFS= read -r d; do
	[ -n "$d" ] && echo "dir=${d#"$root"}"
done >> "$record"
