#!/usr/bin/env bash
# Unpack 23 more sharp photographs from Debian wallpaper packages:
#   bash scripts/fetch_extra_photos.sh data/extra-photos
# OUT/train/ (18 photos) is for training: `data.extra_photos: [data/extra-photos/train]`
# (configs/small-cpu-morephotos.yaml). OUT/test/ (5) is a second held-out set, never trained
# on, next to the frozen benchmark's 6 photos:
#   m2ae synth --photos data/extra-photos/test --preset train --size 512x512 --count 48 \
#       -o unseen/ && m2ae eval --data unseen/
#
# Why: a wider photo pool for the default (configs/small-cpu-morephotos.yaml), and a second
# held-out photo set next to the benchmark's (docs/results/photo-sets). The photos are used
# for training and evaluation only; they are never committed.
#
# Needs `apt-get download` (Debian/Ubuntu, any user). Licences, from each package's
# debian/copyright: mate-backgrounds nature/*.jpg GPL-2+; plasma-workspace-wallpapers GPL-2+;
# lomiri-wallpapers-16.04 umang_by_Abhishek_Mudgal.jpg CC-BY-4.0 (Abhishek Mudgal).
set -euo pipefail

out=${1:?usage: bash scripts/fetch_extra_photos.sh OUT_DIR}
mkdir -p "$out/train" "$out/test"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

(cd "$work" && apt-get download mate-backgrounds plasma-workspace-wallpapers \
    lomiri-wallpapers-16.04 >/dev/null) || {
  echo "apt-get download failed: this script needs a Debian/Ubuntu package index" \
       "(run 'apt-get update' first)" >&2
  exit 1
}
for deb in "$work"/*.deb; do
  dpkg-deb -x "$deb" "$work/root"
done

mate="$work/root/usr/share/backgrounds/mate/nature"
for name in Aqua Blinds Dune FreshFlower Garden GreenMeadow RainDrops TwoWings YellowFlower; do
  cp "$mate/$name.jpg" "$out/train/mate_$name.jpg"
done
for name in LadyBird Storm Wood; do
  cp "$mate/$name.jpg" "$out/test/mate_$name.jpg"
done

plasma="$work/root/usr/share/wallpapers"
# Only the photographs among the Plasma wallpapers (the rest is rendered artwork).
for name in BytheWater ColdRipple EveningGlow FallenLeaf Grey Kite OneStandsOut summer_1am; do
  cp "$plasma/$name/contents/images/2560x1600.jpg" "$out/train/plasma_$name.jpg"
done
for name in ColorfulCups Path; do
  cp "$plasma/$name/contents/images/2560x1600.jpg" "$out/test/plasma_$name.jpg"
done

cp "$work/root/usr/share/backgrounds/umang_by_Abhishek_Mudgal.jpg" "$out/train/"
echo "$(ls "$out/train" | wc -l) training and $(ls "$out/test" | wc -l) test photos in $out"
