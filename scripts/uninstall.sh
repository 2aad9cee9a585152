#!/bin/sh
# Undo scripts/install.sh: the real QEMU goes back to its path byte for
# byte (a rename, or removing the dpkg diversion), and dmctl, the man pages,
# and an unchanged settings file and logrotate snippet go. Idempotent;
# honours DESTDIR.
set -eu

case "${1:-}" in
-h|--help) echo "Usage: [DESTDIR=/some/root] scripts/uninstall.sh"; exit 0 ;;
"") ;;
*) echo "uninstall.sh: unknown argument '$1'; see --help" >&2; exit 2 ;;
esac

here=$(cd "$(dirname "$0")/.." && pwd)
root=${DESTDIR:-}
record="$root/var/lib/dmlaunch/install.record"
say() { echo "uninstall.sh: $*"; }
die() { echo "uninstall.sh: $*" >&2; exit 1; }

if [ ! -f "$record" ]; then
	say "dmlaunch is not installed under '${root:-/}' (no $record): nothing to do"
	exit 0
fi
get() { sed -n "s/^$1=//p" "$record"; }
dm_path=$(get dm_path)
method=$(get method)
bindir=$(get bindir)
mandir=$(get mandir)
[ -n "$dm_path" ] && [ -n "$method" ] || die "$record is incomplete; restore $dm_path by hand from $dm_path.distrib"
target="$root$dm_path"

case "$method" in
dpkg-divert)
	rm -f "$target"
	dpkg_args=""
	if [ -n "$root" ]; then dpkg_args="--root=$root"; fi
	# shellcheck disable=SC2086
	dpkg-divert $dpkg_args --local --rename --divert "$dm_path.distrib" --remove "$dm_path" >/dev/null
	say "removed the diversion: $dm_path is the packaged QEMU again"
	;;
rename)
	[ -e "$target.distrib" ] || die "$target.distrib is missing; the real QEMU is not where install.sh put it"
	mv -f "$target.distrib" "$target"
	say "moved $dm_path.distrib back to $dm_path"
	;;
new)
	rm -f "$target"
	say "removed dmlaunch from $dm_path"
	;;
*) die "$record has unknown method '$method'" ;;
esac

rm -f "$root$bindir/dmctl"
for page in "$here"/docs/*.8; do
	[ -f "$page" ] || continue
	rm -f "$root$mandir/man8/$(basename "$page")"
done
conf="$root/etc/dmlaunch/dmlaunch.conf"
if [ -f "$conf" ]; then
	if cmp -s "$conf" "$here/scripts/dmlaunch.conf"; then
		rm -f "$conf"
	else
		say "kept $conf: it was changed"
	fi
fi
rotate="$root/etc/logrotate.d/dmlaunch"
if [ -f "$rotate" ]; then
	if cmp -s "$rotate" "$here/scripts/dmlaunch.logrotate"; then
		rm -f "$rotate"
	else
		say "kept $rotate: it was changed"
	fi
fi
dirs=$(sed -n 's/^dir=//p' "$record")
rm -f "$record"
# The directories install.sh created, innermost first, if they are empty.
printf '%s\n' "$dirs" | sed '1!G;h;$!d' | while IFS= read -r d; do
	[ -n "$d" ] && rmdir "$root$d" 2>/dev/null || true
done
say "done"
