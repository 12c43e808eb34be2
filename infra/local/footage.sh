#!/usr/bin/env bash
# Real pedestrian footage for the demo and tests: vtest.avi from Debian's opencv-doc package
# (a plaza seen from a raised camera; 768x576, 795 frames at 10 fps). Only that file is
# extracted from the downloaded .deb; nothing is installed. Prints the path.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
OUT="$CACHE/footage/vtest.avi"
if [ ! -s "$OUT" ]; then
  need dpkg-deb "dpkg-deb is needed to unpack the .deb."
  deb="$(opencv_doc_deb)"
  tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" --wildcards '*/vtest.avi*'
  f="$(find "$tmp" -name 'vtest.avi*' | head -n 1)"
  [ -n "$f" ] || die "vtest.avi not found in opencv-doc"
  mkdir -p "$(dirname "$OUT")"
  case "$f" in *.gz) gzip -dc "$f" > "$OUT" ;; *) cp "$f" "$OUT" ;; esac
fi
echo "$OUT"
