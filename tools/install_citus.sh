#!/usr/bin/env bash
# Builds and installs the Citus extension into this machine's PostgreSQL, unless it is there
# already. Needed only for the distributed tests; a user with Citus from their distribution or
# a managed service needs none of this.
#
#     CITUS_SOURCE=DIR tools/install_citus.sh     # DIR holds citus-*.tar.gz and its patches
#
# Default source: ../shared/vendor/citus beside the checkout. Runs as root (apt-get, make install).
#
# Three speeds, fastest first:
#   1. installed already (citus.so and citus.control in place): a no-op, in milliseconds;
#   2. built before on this machine for the same sources and PostgreSQL: the files `make install`
#      wrote are kept in CITUS_CACHE (default ~/.cache/pushpop/citus) and unpacked, in seconds;
#   3. otherwise it builds (about 90 s on 2 cores) and fills that cache.
set -euo pipefail

major=$(psql --version | sed -E 's/[^0-9]*([0-9]+).*/\1/')
server_bin=/usr/lib/postgresql/$major/bin
if [ -n "${PG_CONFIG:-}" ]; then
    pg_config=$PG_CONFIG
elif [ -x "$server_bin/pg_config" ]; then
    pg_config=$server_bin/pg_config  # Debian's server package: the PostgreSQL the tests run
else
    pg_config=$(command -v pg_config || true)
fi
installed() {
    [ -n "$pg_config" ] && [ -f "$("$pg_config" --pkglibdir)/citus.so" ] \
        && [ -f "$("$pg_config" --sharedir)/extension/citus.control" ]
}
if installed; then
    echo "citus: installed already in $("$pg_config" --pkglibdir)" \
         "($(sed -nE "s/^default_version = '(.*)'/\1/p" \
             "$("$pg_config" --sharedir)/extension/citus.control"))"
    exit 0
fi

here=$(cd "$(dirname "$0")/.." && pwd)
source_dir=${CITUS_SOURCE:-$here/../shared/vendor/citus}
archive=$(ls "$source_dir"/citus-*.tar.gz 2>/dev/null | head -n 1 || true)
if [ -z "$archive" ]; then
    echo "citus: no citus-*.tar.gz in $source_dir (set CITUS_SOURCE)" >&2
    exit 1
fi

# The cache key: the sources (archive and patches) and the exact PostgreSQL the build is for.
cache_dir=${CITUS_CACHE:-${HOME:-/root}/.cache/pushpop/citus}
key=$( { cat "$archive" "$source_dir"/*.patch 2>/dev/null; \
         "$server_bin/postgres" --version 2>/dev/null || psql --version; \
         uname -m; } | sha256sum | cut -c1-16)
cached="$cache_dir/citus-$key.tar.gz"
if [ -n "$pg_config" ] && [ -f "$cached" ]; then
    tar xzf "$cached" -C /
    if installed; then
        echo "citus: installed from the cache $cached"
        exit 0
    fi
fi

apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "postgresql-server-dev-$major" \
    libcurl4-openssl-dev liblz4-dev libzstd-dev libkrb5-dev libssl-dev libselinux1-dev \
    libxslt1-dev libpam0g-dev libreadline-dev >/dev/null
[ -x "$server_bin/pg_config" ] && pg_config=$server_bin/pg_config || pg_config=$(command -v pg_config)

build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
mkdir "$build/src" "$build/stage"
tar xzf "$archive" -C "$build/src"
cd "$build/src"
[ -e configure ] || cd "$(ls -d "$build"/src/*/ | head -n 1)"  # an archive with a top folder
for patch in "$source_dir"/*.patch; do
    [ -e "$patch" ] && patch -s -p1 < "$patch"
done
./configure --quiet PG_CONFIG="$pg_config" >/dev/null
make -s -j"$(nproc)" >/dev/null
# Installed into a staging folder first: its files become the cache, then are copied into place.
make -s install DESTDIR="$build/stage" >/dev/null
mkdir -p "$cache_dir"
tar czf "$cached.partial" -C "$build/stage" .
mv "$cached.partial" "$cached"
tar xzf "$cached" -C /
echo "citus: installed into $("$pg_config" --pkglibdir) (cached in $cached)"
