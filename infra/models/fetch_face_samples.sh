#!/usr/bin/env bash
# Real face images for the face/age/gender tests and bench, from Debian's opencv-doc package
# (the same .deb infra/local/footage.sh takes vtest.avi from). Only these files are extracted
# from the downloaded .deb; nothing is installed; each is checked against its sha256 (opencv-doc
# 4.6.0+dfsg-12). Prints the directory. They are test inputs, never committed.
#   face_swapped.jpg             one frontal adult man, face ~110x140 px (OpenCV face-swap tutorial)
#   faceDetection.png            "Lena", frontal adult woman, with a drawn face box (DNN face tutorial)
#   julia_facedetect_sample.jpg  Mona Lisa, grey, with a drawn face box (Julia bindings tutorial)
#   messi5.jpg                   a footballer in action, face ~30 px (OpenCV sample data)
source "$(dirname "${BASH_SOURCE[0]}")/../local/common.sh"
OUT="$CACHE/faces"
declare -A WANT=(
  [face_swapped.jpg]=302634120bc53f9327cb06c7cb265fc4741fef281514d8f3bd214749e53ce6cc
  [faceDetection.png]=dc0959a0c6c202da4779da95ff752b02510219bfcff3c0464d6d47184a082601
  [julia_facedetect_sample.jpg]=4c2737ea3f3a3245cbb77d7395287ef9a9eca1bd905b9b3e9585ca1d422b35d1
  [messi5.jpg]=1d570e49654e84c7a943918537bd9e5e1ef82920152e147c834006e235be97c9
)
complete=1
for f in "${!WANT[@]}"; do [ -s "$OUT/$f" ] || complete=0; done
if [ "$complete" = 0 ]; then
  need dpkg-deb "dpkg-deb is needed to unpack the .deb."
  deb="$(opencv_doc_deb)"
  tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
  patterns=(); for f in "${!WANT[@]}"; do patterns+=("*/$f"); done
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" --wildcards "${patterns[@]}"
  mkdir -p "$OUT"
  for f in "${!WANT[@]}"; do
    src="$(find "$tmp" -name "$f" -path '*/usr/share/doc/*' | head -n 1)"
    [ -n "$src" ] || die "$f not found in opencv-doc"
    cp "$src" "$OUT/$f"
  done
fi
for f in "${!WANT[@]}"; do
  got="$(sha256sum "$OUT/$f" | cut -d' ' -f1)"
  [ "$got" = "${WANT[$f]}" ] || die "$OUT/$f has sha256 $got, expected ${WANT[$f]} (another opencv-doc version?)"
done
echo "$OUT"
