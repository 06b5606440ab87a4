"""A host's variables as the playbooks see them, for the checks (tests/host/conftest.py) and the
unit tests of the inventories' wiring (tests/unit/test_tiers.py)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


class HostVars(Mapping[str, Any]):
    """A host's variables as the playbooks see them: role defaults (every role under
    roles/), then group_vars and host_vars of the inventory, templated on access by
    Ansible itself. Only the keys a check reads are templated, so vaulted secrets are
    decrypted only when a check needs them."""

    def __init__(self, inventory: str, hostname: str) -> None:
        from ansible.inventory.manager import InventoryManager
        from ansible.parsing.dataloader import DataLoader
        from ansible.plugins.loader import init_plugin_loader
        from ansible.template import Templar
        from ansible.vars.hostvars import HostVars as AnsibleHostVars
        from ansible.vars.manager import VariableManager

        init_plugin_loader()
        loader = DataLoader()
        inv = InventoryManager(loader=loader, sources=[inventory])
        manager = VariableManager(loader=loader, inventory=inv)
        # `hostvars` as in a play: the tiers' wiring reads other hosts' variables
        # (inventory/lab/group_vars/all/tiers.yml).
        manager._hostvars = AnsibleHostVars(inventory=inv, variable_manager=manager, loader=loader)
        # Role defaults have the lowest precedence: the inventory overrides them.
        defaults: dict[str, Any] = {}
        for path in sorted(REPO_ROOT.glob("roles/*/defaults/main.yml")):
            # Trusted as templates, as Ansible loads role defaults (ansible-core 2.19 templates
            # only trusted strings): a default built from another variable is templated too.
            defaults.update(loader.load_from_file(str(path), trusted_as_template=True) or {})
        self._vars = {**defaults, **manager.get_vars(host=inv.get_host(hostname))}
        self._templar = Templar(loader=loader, variables=self._vars)
        self._cache: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        if key == "hostvars":
            # Ansible's own mapping of every host's variables: it templates on access.
            return self._vars[key]
        if key not in self._cache:
            self._cache[key] = self._templar.template(self._vars[key])
        return self._cache[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._vars)

    def __len__(self) -> int:
        return len(self._vars)
