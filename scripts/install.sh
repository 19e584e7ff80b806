#!/usr/bin/env bash
# Install libvicpull under PREFIX (default /usr/local):
#
#   PREFIX/lib/libvicpull.so.X.Y.Z   soname libvicpull.so.X (build.rs sets it)
#   PREFIX/lib/libvicpull.so.X -> libvicpull.so.X.Y.Z
#   PREFIX/lib/libvicpull.so   -> libvicpull.so.X  (for -lvicpull)
#   PREFIX/lib/libvicpull.a
#   PREFIX/include/vicpull.h, PREFIX/include/vicpull.hpp
#   PREFIX/lib/pkgconfig/vicpull.pc
#
# usage: scripts/install.sh [--no-build] [PREFIX]
#   --no-build   install what target/release holds (cargo build --release first)
#   DESTDIR=...  stage under DESTDIR (packaging); the .pc still names PREFIX
#   INCDIR=...   take vicpull.h and vicpull.hpp from there (default include/)
#
# Then: PKG_CONFIG_PATH=PREFIX/lib/pkgconfig pkg-config --cflags --libs vicpull
set -euo pipefail

build=1
if [ "${1:-}" = "--no-build" ]; then
  build=0
  shift
fi
prefix=${1:-/usr/local}
case "$prefix" in
  /*) ;;
  *) prefix=$(pwd)/$prefix ;;
esac
root=$(cd "$(dirname "$0")/.." && pwd)
dest=${DESTDIR:-}

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -1)
major=${version%%.*}
[ -n "$version" ] || { echo "install.sh: no version in Cargo.toml" >&2; exit 1; }

if [ "$build" = 1 ]; then
  (cd "$root" && cargo build --release --lib)
fi
so=$root/target/release/libvicpull.so
ar=$root/target/release/libvicpull.a
for f in "$so" "$ar"; do
  [ -f "$f" ] || { echo "install.sh: $f missing (cargo build --release)" >&2; exit 1; }
done
if command -v readelf >/dev/null; then
  soname=$(readelf -d "$so" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
  if [ "$soname" != "libvicpull.so.$major" ]; then
    echo "install.sh: $so has soname '$soname', want libvicpull.so.$major (build.rs)" >&2
    exit 1
  fi
fi

lib=$dest$prefix/lib
inc=$dest$prefix/include
install -d "$lib/pkgconfig" "$inc"
install -m 755 "$so" "$lib/libvicpull.so.$version"
ln -sf "libvicpull.so.$version" "$lib/libvicpull.so.$major"
ln -sf "libvicpull.so.$major" "$lib/libvicpull.so"
install -m 644 "$ar" "$lib/libvicpull.a"
incdir=${INCDIR:-$root/include}
install -m 644 "$incdir/vicpull.h" "$incdir/vicpull.hpp" "$inc/"

# Libs.private: what the staticlib needs (rustc --print native-static-libs).
cat >"$lib/pkgconfig/vicpull.pc" <<PC
prefix=$prefix
exec_prefix=\${prefix}
libdir=\${exec_prefix}/lib
includedir=\${prefix}/include

Name: vicpull
Description: Pull container images from Docker/OCI registries into an OCI layout
Version: $version
Libs: -L\${libdir} -lvicpull
Libs.private: -lgcc_s -lutil -lrt -lpthread -lm -ldl
Cflags: -I\${includedir}
PC

echo "installed vicpull $version under $dest$prefix"
