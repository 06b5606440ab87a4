#!/usr/bin/python
# Copyright: the hardened.platform authors
# MIT License (galaxy.yml)
"""The installed Debian packages as ansible_facts.packages, read with dpkg-query."""

from __future__ import annotations

DOCUMENTATION = r"""
module: dpkg_facts
short_description: The installed packages of a Debian or Ubuntu host, as ansible_facts.packages
description:
  - Sets C(ansible_facts.packages) in the format of C(ansible.builtin.package_facts) (a list of
    C(name), C(version), C(arch), C(source) per package name), read with one C(dpkg-query) call.
  - C(package_facts) loads python3-apt's whole cache for the same answer, which takes about a
    second on every run; the roles read the package database once per run to install only what
    is missing (CONTRIBUTING.md).
  - A package counts as installed when dpkg has a version of it on the host (any state but
    not-installed and config-files), as apt does.
version_added: 1.2.0
author: hardened.platform authors
options: {}
attributes:
  check_mode: {support: full}
  diff_mode: {support: none}
  facts: {support: full}
"""

EXAMPLES = r"""
- name: Read which packages are installed
  hardened.platform.dpkg_facts:

- name: Install nginx only where it is missing
  ansible.builtin.apt:
    name: nginx
  when: "'nginx' not in ansible_facts.packages"
"""

RETURN = r"""
ansible_facts:
  description: C(packages), a dict of package name to a list of installed versions.
  returned: always
  type: dict
"""

from ansible.module_utils.basic import AnsibleModule

FORMAT = "${db:Status-Abbrev}\\t${Package}\\t${Version}\\t${Architecture}\\n"


def main():
    module = AnsibleModule(argument_spec={}, supports_check_mode=True)
    dpkg_query = module.get_bin_path("dpkg-query", required=True)
    rc, out, err = module.run_command([dpkg_query, "--show", "--showformat", FORMAT])
    if rc != 0:
        module.fail_json(msg=f"dpkg-query failed: {(err or out).strip()}")
    packages = {}
    for line in out.splitlines():
        fields = line.split("\t")
        if len(fields) != 4:
            continue
        status, name, version, arch = fields
        # Status-Abbrev: wanted, current state, error; current "n" = not installed, "c" = config files only
        if len(status) < 2 or status[1] in ("n", "c") or not version:
            continue
        packages.setdefault(name, []).append({"name": name, "version": version, "arch": arch, "source": "apt"})
    module.exit_json(changed=False, ansible_facts={"packages": packages})


if __name__ == "__main__":
    main()
