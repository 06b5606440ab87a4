#!/usr/bin/env bash
# sanity.sh: `ansible-test sanity` on the collection, in a scratch copy of the committed tree
# laid out as ansible_collections/hardened/platform (where ansible-test wants it).
# Run: the tests that apply to a collection of roles and work offline. Not run: the tests that
# first build their own virtualenv (ansible-doc once there is a plugin, changelog, pylint, pep8,
# yamllint, validate-modules, import, pslint, runtime-metadata): ansible-test bootstraps pip
# for them from a host these machines cannot reach. What they cover is run by `make lint` with pinned tools (ruff for pep8/pylint,
# yamllint, ansible-lint, antsibull-changelog), `ansible-doc -t role` runs in
# scripts/collection-check.sh, and the one plugin (plugins/filter) has its unit tests.
# Exceptions with reasons: tests/sanity/ignore-2.19.txt (scripts and templates that are not
# collection content keep their interpreters; inventory/tiers shares the lab's group_vars
# through a directory link, and inventory/ is not part of the artifact: build_ignore).
set -euo pipefail
cd "$(dirname "$0")/.."
tests=(action-plugin-docs compile empty-init ignores line-endings no-assert
       no-get-exception no-illegal-filenames no-smart-quotes replace-urlopen shebang symlinks
       use-argspec-type-path use-compat-six)
work=$(mktemp -d /tmp/sanity.XXXXXX)
trap 'rm -rf "$work"' EXIT
dest="$work/ansible_collections/hardened/platform"
mkdir -p "$dest"
# The committed tree plus what is staged or changed (ansible-test reads git's file list).
git ls-files -z --cached --others --exclude-standard | grep -zv '^collections/' \
  | xargs -0 tar -cf - --no-recursion 2>/dev/null | tar -xf - -C "$dest"
git -C "$dest" init -q
git -C "$dest" add -A
git -C "$dest" -c user.name=sanity -c user.email=sanity@localhost commit -qm sanity
args=()
for t in "${tests[@]}"; do args+=(--test "$t"); done
cd "$dest"
LC_ALL=C.UTF-8 ansible-test sanity --python "$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')" \
  --color no "${args[@]}" 2>&1 | grep -v '^WARNING: Using locale'
