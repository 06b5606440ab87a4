#!/usr/bin/env bash
# ubuntu-keyring.sh: print the directory holding Ubuntu's archive keyring (a directory:
# apt, as run by mmdebstrap --keyring, reads keys from a directory; a lone file given as
# Dir::Etc::Trusted is ignored by apt 2.6), obtained through Debian's
# signed archive (package ubuntu-archive-keyring of Debian 13 "trixie"; bookworm has none).
# mmdebstrap --variant=extract downloads only that package and apt verifies it against the
# controller's Debian archive keyring, so the key that then verifies Ubuntu's Release files
# never travels unauthenticated. Cached per controller; IAC_APT_MIRROR (debian=URL) applies.
set -euo pipefail
# shellcheck source=scripts/lab/lib.sh
source "$(dirname "$0")/lib.sh"

cache=${XDG_CACHE_HOME:-$HOME/.cache}/iac-platform/keyrings/ubuntu
keyring=$cache/ubuntu-archive-keyring.gpg
if [ -s "$keyring" ]; then
  printf '%s\n' "$cache"
  exit 0
fi
command -v mmdebstrap >/dev/null || die "mmdebstrap is missing: run 'make bootstrap'"
mkdir -p "$cache"
work=$(mktemp -d /var/tmp/iac-keyring.XXXXXX)
trap 'rm -rf "$work"' EXIT
mirror=()
for pair in ${IAC_APT_MIRROR:-}; do
  [ "${pair%%=*}" = debian ] && mirror=("deb ${pair#*=} trixie main")
done
log "Fetching Ubuntu's archive keyring from Debian 13's signed archive (package ubuntu-archive-keyring)"
mmdebstrap --quiet --variant=extract --include=ubuntu-archive-keyring trixie "$work/root" "${mirror[@]}" \
  || die "could not fetch ubuntu-archive-keyring from Debian's trixie archive: is the Debian archive (or IAC_APT_MIRROR) reachable?"
src=$work/root/usr/share/keyrings/ubuntu-archive-keyring.gpg
[ -s "$src" ] || die "ubuntu-archive-keyring did not contain usr/share/keyrings/ubuntu-archive-keyring.gpg"
install -m 0644 "$src" "$keyring.new" && mv "$keyring.new" "$keyring"
printf '%s\n' "$cache"
