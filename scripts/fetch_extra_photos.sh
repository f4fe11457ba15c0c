#!/usr/bin/env bash
# Unpack 23 more sharp photographs for training from Debian wallpaper packages:
#   bash scripts/fetch_extra_photos.sh data/extra-photos
# then train with `data.extra_photos: [data/extra-photos]` (configs/small-cpu-morephotos.yaml).
#
# Why: the bundled model restores synthetic blur on its 14 training photos about 2.5x better
# than on photos it never saw (README, "Results"), so the photo pool, not only the step
# count, limits it. The photos are used for training only; they are never committed.
#
# Needs `apt-get download` (Debian/Ubuntu, any user). Licences, from each package's
# debian/copyright: mate-backgrounds nature/*.jpg GPL-2+; plasma-workspace-wallpapers GPL-2+;
# lomiri-wallpapers-16.04 umang_by_Abhishek_Mudgal.jpg CC-BY-4.0 (Abhishek Mudgal).
set -euo pipefail

out=${1:?usage: bash scripts/fetch_extra_photos.sh OUT_DIR}
mkdir -p "$out"
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
for name in Aqua Blinds Dune FreshFlower Garden GreenMeadow LadyBird RainDrops Storm \
            TwoWings Wood YellowFlower; do
  cp "$mate/$name.jpg" "$out/mate_$name.jpg"
done

plasma="$work/root/usr/share/wallpapers"
# Only the photographs among the Plasma wallpapers (the rest is rendered artwork).
for name in BytheWater ColdRipple ColorfulCups EveningGlow FallenLeaf Grey Kite \
            OneStandsOut Path summer_1am; do
  cp "$plasma/$name/contents/images/2560x1600.jpg" "$out/plasma_$name.jpg"
done

cp "$work/root/usr/share/backgrounds/umang_by_Abhishek_Mudgal.jpg" "$out/"
echo "$(ls "$out" | wc -l) photos in $out"
