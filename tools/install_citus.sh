#!/usr/bin/env bash
# Builds and installs the Citus extension into this machine's PostgreSQL, unless it is there
# already. Needed only for the distributed tests; a user with Citus from their distribution or
# a managed service needs none of this.
#
#     CITUS_SOURCE=DIR tools/install_citus.sh     # DIR holds citus-*.tar.gz and its patches
#
# Default source: ../shared/vendor/citus beside the checkout. Runs as root (apt-get, make install).
set -euo pipefail

pg_config=${PG_CONFIG:-$(command -v pg_config || true)}
if [ -n "$pg_config" ] && [ -f "$("$pg_config" --pkglibdir)/citus.so" ]; then
    echo "citus: installed already in $("$pg_config" --pkglibdir)"
    exit 0
fi

here=$(cd "$(dirname "$0")/.." && pwd)
source_dir=${CITUS_SOURCE:-$here/../shared/vendor/citus}
archive=$(ls "$source_dir"/citus-*.tar.gz 2>/dev/null | head -n 1 || true)
if [ -z "$archive" ]; then
    echo "citus: no citus-*.tar.gz in $source_dir (set CITUS_SOURCE)" >&2
    exit 1
fi

major=$(psql --version | sed -E 's/[^0-9]*([0-9]+).*/\1/')
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "postgresql-server-dev-$major" \
    libcurl4-openssl-dev liblz4-dev libzstd-dev libkrb5-dev libssl-dev libselinux1-dev \
    libxslt1-dev libpam0g-dev libreadline-dev >/dev/null
pg_config=$(command -v pg_config)

build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
tar xzf "$archive" -C "$build"
cd "$build"
[ -e configure ] || cd "$(ls -d "$build"/*/ | head -n 1)"  # an archive with a top folder
for patch in "$source_dir"/*.patch; do
    [ -e "$patch" ] && patch -s -p1 < "$patch"
done
./configure --quiet PG_CONFIG="$pg_config" >/dev/null
make -s -j"$(nproc)" >/dev/null
make -s install >/dev/null
echo "citus: installed into $("$pg_config" --pkglibdir)"
