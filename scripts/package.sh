#!/usr/bin/env bash
# Builds the Debian package (target/debian/pgmux_<version>_<arch>.deb) with cargo-deb, installed
# when missing: the release binary, the systemd units (packaging/pgmux.service, Type=notify; and
# pgmux.socket, socket activation), the man page generated from the command line definition, an
# example /etc/pgmux/pgbouncer.ini, logrotate and the docs. Then checks what it built: the file
# list, the packaged binary's version, the man page, and the units (systemd-analyze when present).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo-deb >/dev/null; then
    echo "installing cargo-deb (cargo install cargo-deb --locked)..." >&2
    cargo install -q cargo-deb --locked
fi
cargo build -q --release -p pgmux
mkdir -p target/package
target/release/pgmux manpage | gzip -9n >target/package/pgmux.1.gz
deb=$(cargo deb -p pgmux --no-build --no-strip 2>/dev/null | tail -1)
echo "built $deb"
dpkg-deb -c "$deb" | awk '{print $1, $6}'
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
dpkg-deb -x "$deb" "$root"
"$root/usr/bin/pgmux" -V | grep -q "PgBouncer 1.25.2 (pgmux" || { echo "packaged binary does not run" >&2; exit 1; }
zcat "$root/usr/share/man/man1/pgmux.1.gz" | grep -q "^.TH pgmux 1" || { echo "bad man page" >&2; exit 1; }
for f in etc/pgmux/pgbouncer.ini lib/systemd/system/pgmux.service lib/systemd/system/pgmux.socket etc/logrotate.d/pgmux; do
    [[ -f $root/$f ]] || { echo "missing $f" >&2; exit 1; }
done
if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify "$root/lib/systemd/system/pgmux.service" 2>&1 | grep -v "Cannot find\|/usr/bin/pgmux" || true
fi
echo "package ok: $deb"
