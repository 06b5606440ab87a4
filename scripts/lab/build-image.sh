#!/usr/bin/env bash
# build-image.sh NAME: build the lab image described by lab/images/NAME.conf with
# mmdebstrap and import it into podman as localhost/iac-lab:NAME. The image is rebuilt
# only when its recipe (the .conf and this script) changes: the recipe's hash is a label
# on the image.
#
# Mirrors: none is written here. mmdebstrap picks the distribution's official archive,
# -updates and -security suites from the suite name itself (Debian's for bookworm/trixie,
# Ubuntu's for noble). To use your own mirror, set IAC_APT_MIRROR to "archive=URL" pairs:
#   IAC_APT_MIRROR="debian=http://mirror.local/debian debian-security=http://mirror.local/debian-security ubuntu=http://mirror.local/ubuntu"
# An image whose archive has no pair keeps the official default.
#
# Ubuntu images are verified with Ubuntu's archive keyring, which reaches us signed through
# Debian's archive (package ubuntu-archive-keyring, Debian 13): it is extracted from there
# with mmdebstrap, checked by apt against Debian's keyring, never downloaded unauthenticated.
set -euo pipefail
# shellcheck source=scripts/lab/lib.sh
source "$(dirname "$0")/lib.sh"

name=${1:?usage: build-image.sh NAME (one of: $(cd "$REPO_ROOT/lab/images" && ls -- *.conf | sed 's/\.conf$//' | xargs))}
conf=$REPO_ROOT/lab/images/$name.conf
[ -f "$conf" ] || die "no recipe lab/images/$name.conf"
require_podman

SUITE='' PACKAGES='' INIT=systemd VENDOR=debian COMPONENTS=main
# shellcheck source=/dev/null
source "$conf"
recipe=$(cat "$conf" "$0" | sha256sum | cut -c1-16)
image=$LAB_IMAGE_REPO:$name

if [ "$(podman image inspect --format '{{ index .Labels "iac.recipe" }}' "$image" 2>/dev/null)" = "$recipe" ]; then
  log "Image $image is current (recipe $recipe)"
  exit 0
fi
command -v mmdebstrap >/dev/null || die "mmdebstrap is missing: run 'make bootstrap'"

# mirror_for ARCHIVE prints the override URL IAC_APT_MIRROR gives ARCHIVE, if any.
mirror_for() {
  local pair
  for pair in ${IAC_APT_MIRROR:-}; do
    [ "${pair%%=*}" = "$1" ] && { printf '%s\n' "${pair#*=}"; return 0; }
  done
  return 0
}

work=$(mktemp -d /var/tmp/iac-image.XXXXXX)
trap 'rm -rf "$work"' EXIT

# The sources: mmdebstrap's own choice unless IAC_APT_MIRROR names a mirror.
sources=()
keyring=()
case "$VENDOR" in
  debian)
    main=$(mirror_for debian) security=$(mirror_for debian-security)
    if [ -n "$main" ]; then
      sources=("deb $main $SUITE ${COMPONENTS//,/ }" "deb $main $SUITE-updates ${COMPONENTS//,/ }"
               "deb ${security:-$main} $SUITE-security ${COMPONENTS//,/ }")
    fi
    ;;
  ubuntu)
    main=$(mirror_for ubuntu)
    if [ -n "$main" ]; then
      sources=("deb $main $SUITE ${COMPONENTS//,/ }" "deb $main $SUITE-updates ${COMPONENTS//,/ }"
               "deb $main $SUITE-security ${COMPONENTS//,/ }")
    fi
    # apt reads the keyring as its unprivileged _apt user: a copy in a world-readable
    # directory (the cache lives under root's 0700 home).
    mkdir -m 0755 "$work/keyring"
    cp "$("$REPO_ROOT/scripts/lab/ubuntu-keyring.sh")"/*.gpg "$work/keyring/"
    chmod 0755 "$work" && chmod 0644 "$work"/keyring/*.gpg
    keyring=(--keyring="$work/keyring")
    ;;
  *) die "lab/images/$name.conf: VENDOR must be debian or ubuntu, not '$VENDOR'" ;;
esac

log "Building $image from $VENDOR $SUITE with mmdebstrap (about a minute)"
hooks=()
if [ "$INIT" = systemd ]; then
  hooks+=(
    # Each container gets its own SSH host keys, not ones baked into the image. They are
    # made early in boot, before sockets.target: on Ubuntu sshd is socket-activated
    # (ssh.socket, as Ubuntu ships it), and a first connection must never start an sshd
    # that has no keys (it exits and the socket hits its start limit).
    --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*'
    --customize-hook='printf "%s\n" "[Unit]" "Description=Generate SSH host keys on first boot" "DefaultDependencies=no" "After=local-fs.target" "Before=sockets.target ssh.socket ssh.service" "ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key" "[Service]" "Type=oneshot" "RemainAfterExit=yes" "ExecStart=/usr/bin/ssh-keygen -A" "[Install]" "WantedBy=sockets.target" > "$1"/etc/systemd/system/ssh-hostkeys.service'
    --customize-hook='chroot "$1" systemctl enable ssh-hostkeys.service'
    # A container has no consoles or kernel mounts to manage.
    --customize-hook='chroot "$1" systemctl mask getty@tty1.service console-getty.service systemd-remount-fs.service'
    --customize-hook='rm -f "$1"/etc/hostname "$1"/etc/machine-id && touch "$1"/etc/machine-id'
  )
  # Debian starts sshd as ssh.service; Ubuntu's ssh.socket stays exactly as shipped.
  [ "$VENDOR" = debian ] && hooks+=(--customize-hook='chroot "$1" systemctl enable ssh.service')
fi

mmdebstrap --quiet --variant=minbase --skip=cleanup/apt/lists --components="$COMPONENTS" \
  --include="${PACKAGES// /,}" "${keyring[@]}" \
  --customize-hook='rm -rf "$1"/var/cache/apt/archives/*.deb' \
  "${hooks[@]}" \
  "$SUITE" "$work/rootfs.tar" "${sources[@]}" \
  || die "mmdebstrap failed for $VENDOR $SUITE: is the $VENDOR archive (or IAC_APT_MIRROR) reachable?"

changes=(--change "LABEL iac.recipe=$recipe")
if [ "$INIT" = systemd ]; then
  changes+=(--change 'CMD ["/sbin/init"]' --change 'STOPSIGNAL SIGRTMIN+3')
fi
podman import --quiet "${changes[@]}" "$work/rootfs.tar" "$image" >/dev/null
log "Imported $image ($(podman image inspect --format '{{.Size}}' "$image" | numfmt --to=iec))"
