#!/usr/bin/env bash
# build-image.sh NAME: build the lab image described by lab/images/NAME.conf with
# mmdebstrap (Debian's mirror only) and import it into podman as
# localhost/iac-lab:NAME. The image is rebuilt only when its recipe (the .conf and this
# script) changes: the recipe's hash is a label on the image.
set -euo pipefail
# shellcheck source=scripts/lab/lib.sh
source "$(dirname "$0")/lib.sh"

name=${1:?usage: build-image.sh NAME (one of: $(cd "$REPO_ROOT/lab/images" && ls -- *.conf | sed 's/\.conf$//' | xargs))}
conf=$REPO_ROOT/lab/images/$name.conf
[ -f "$conf" ] || die "no recipe lab/images/$name.conf"
require_podman

SUITE='' PACKAGES='' INIT=systemd
# shellcheck source=/dev/null
source "$conf"
recipe=$(cat "$conf" "$0" | sha256sum | cut -c1-16)
image=$LAB_IMAGE_REPO:$name

if [ "$(podman image inspect --format '{{ index .Labels "iac.recipe" }}' "$image" 2>/dev/null)" = "$recipe" ]; then
  log "Image $image is current (recipe $recipe)"
  exit 0
fi
command -v mmdebstrap >/dev/null || die "mmdebstrap is missing: run 'make bootstrap'"

work=$(mktemp -d /var/tmp/iac-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
log "Building $image from Debian $SUITE with mmdebstrap (about a minute)"

hooks=()
if [ "$INIT" = systemd ]; then
  hooks+=(
    # Each container must get its own SSH host keys, not ones baked into the image.
    --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*'
    --customize-hook='printf "%s\n" "[Unit]" "Description=Generate SSH host keys on first boot" "Before=ssh.service ssh.socket" "ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key" "[Service]" "Type=oneshot" "ExecStart=/usr/bin/ssh-keygen -A" "[Install]" "WantedBy=multi-user.target" > "$1"/etc/systemd/system/ssh-hostkeys.service'
    --customize-hook='chroot "$1" systemctl enable ssh-hostkeys.service ssh.service'
    # A container has no consoles or kernel mounts to manage.
    --customize-hook='chroot "$1" systemctl mask getty@tty1.service console-getty.service systemd-remount-fs.service'
    --customize-hook='rm -f "$1"/etc/hostname "$1"/etc/machine-id && touch "$1"/etc/machine-id'
  )
fi

mmdebstrap --quiet --variant=minbase --skip=cleanup/apt/lists --include="${PACKAGES// /,}" \
  --customize-hook='rm -rf "$1"/var/cache/apt/archives/*.deb' \
  "${hooks[@]}" \
  "$SUITE" "$work/rootfs.tar" \
  "deb http://deb.debian.org/debian $SUITE main" \
  "deb http://deb.debian.org/debian $SUITE-updates main" \
  "deb http://deb.debian.org/debian-security $SUITE-security main" \
  || die "mmdebstrap failed for $SUITE: is the Debian mirror reachable?"

changes=(--change "LABEL iac.recipe=$recipe")
if [ "$INIT" = systemd ]; then
  changes+=(--change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3')
fi
podman import --quiet "${changes[@]}" "$work/rootfs.tar" "$image" >/dev/null
log "Imported $image ($(podman image inspect --format '{{.Size}}' "$image" | numfmt --to=iec))"
