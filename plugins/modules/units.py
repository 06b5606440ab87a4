#!/usr/bin/python
# Copyright: the hardened.platform authors
# MIT License (galaxy.yml)
"""Several systemd units enabled, started or stopped in one round trip."""

from __future__ import annotations

DOCUMENTATION = r"""
module: units
short_description: Enable, disable, start and stop several systemd units in one call
description:
  - One module call instead of one C(ansible.builtin.systemd_service) call per unit. Each unit's
    wanted state is compared with what systemd reports (C(systemctl show)), and only the
    differences are acted on, in the order the units are given.
  - Supports check mode (a unit that does not exist yet, because an earlier task would have
    installed it, is reported as a change instead of failing) and diff mode.
  - A unit systemd has not loaded yet, or whose file changed since it was loaded, makes the
    module reload systemd once (C(systemctl daemon-reload)) before it acts, as a run that failed
    before its handler reloaded systemd leaves things.
  - Restarts and reloads stay with handlers (C(ansible.builtin.systemd_service)); this module
    only converges states.
version_added: 1.2.0
author: hardened.platform authors
options:
  units:
    description: The units, acted on in this order.
    type: list
    elements: dict
    required: true
    suboptions:
      name: {description: The unit's full name (C(app.socket), C(backup.timer))., type: str, required: true}
      enabled: {description: Whether it starts at boot (C(systemctl enable/disable))., type: bool}
      state:
        description: Whether it runs now.
        type: str
        choices: [started, stopped]
  daemon_reload:
    description: Run C(systemctl daemon-reload) first (not reported as a change, as with systemd_service).
    type: bool
    default: false
attributes:
  check_mode: {support: full}
  diff_mode: {support: full}
"""

EXAMPLES = r"""
- name: Enable and start the timers, keep the old one stopped
  hardened.platform.units:
    daemon_reload: true
    units:
      - {name: backup.timer, enabled: true, state: started}
      - {name: backup-check.timer, enabled: true, state: started}
      - {name: backup-old.timer, enabled: false, state: stopped}
"""

RETURN = r"""
units:
  description: One entry per unit with C(name), C(changed) and what was done (C(actions)).
  type: list
  elements: dict
  returned: always
"""

from ansible.module_utils.basic import AnsibleModule

# what `systemctl is-enabled` prints for a unit that starts at boot or needs no enabling
ENABLED = {"enabled", "enabled-runtime", "static", "alias", "indirect", "generated", "transient"}
RUNNING = {"active", "activating", "reloading", "refreshing"}


def _show(module, systemctl, name):
    rc, out, err = module.run_command(
        [systemctl, "show", "--property=LoadState,ActiveState,UnitFileState,NeedDaemonReload", name]
    )
    if rc != 0:
        module.fail_json(msg=f"systemctl show {name} failed: {(err or out).strip()}")
    props = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return props


def _systemctl(module, systemctl, result, *words):
    rc, out, err = module.run_command([systemctl, *words])
    if rc != 0:
        module.fail_json(msg=f"systemctl {' '.join(words)} failed: {(err or out).strip()}", **result)


def main():
    module = AnsibleModule(
        argument_spec={
            "units": {
                "type": "list",
                "elements": "dict",
                "required": True,
                "options": {
                    "name": {"type": "str", "required": True},
                    "enabled": {"type": "bool"},
                    "state": {"type": "str", "choices": ["started", "stopped"]},
                },
            },
            "daemon_reload": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    systemctl = module.get_bin_path("systemctl", required=True)
    reloaded = module.params["daemon_reload"] and not module.check_mode
    if reloaded:
        _systemctl(module, systemctl, {"changed": False}, "daemon-reload")
    report, diffs = [], []
    result = {"changed": False, "units": report}
    for unit in module.params["units"]:
        name = unit["name"]
        entry = {"name": name, "changed": False, "actions": []}
        report.append(entry)
        props = _show(module, systemctl, name)
        stale = props.get("LoadState") in ("not-found", None) or props.get("NeedDaemonReload") == "yes"
        if stale and not reloaded and not module.check_mode:
            # a unit file written by a run that failed before its handler reloaded systemd
            _systemctl(module, systemctl, result, "daemon-reload")
            reloaded = True
            props = _show(module, systemctl, name)
        if props.get("LoadState") in ("not-found", None):
            if module.check_mode:  # an earlier task of this run would have installed it
                entry.update(changed=True, actions=["(not installed yet)"])
                result["changed"] = True
                continue
            module.fail_json(
                msg=f"unit {name} is not installed (systemd: LoadState={props.get('LoadState')})", **result
            )
        if props.get("LoadState") == "masked":
            module.fail_json(msg=f"unit {name} is masked", **result)
        before, after = {}, {}
        if unit["enabled"] is not None:
            rc, out, _err = module.run_command([systemctl, "is-enabled", name])
            current = out.strip() or props.get("UnitFileState", "")
            is_enabled = rc == 0 and current in ENABLED
            if is_enabled != unit["enabled"]:
                entry["actions"].append("enable" if unit["enabled"] else "disable")
                before["enabled"], after["enabled"] = is_enabled, unit["enabled"]
        if unit["state"] is not None:
            active = props.get("ActiveState", "")
            want_running = unit["state"] == "started"
            if want_running and active not in RUNNING:
                entry["actions"].append("start")
            elif not want_running and (active in RUNNING or active == "deactivating"):
                entry["actions"].append("stop")
            if entry["actions"] and entry["actions"][-1] in ("start", "stop"):
                before["state"], after["state"] = active, unit["state"]
        if not entry["actions"]:
            continue
        entry["changed"] = result["changed"] = True
        if module._diff:
            diffs.append(
                {
                    "before_header": name,
                    "after_header": name,
                    "before": "".join(f"{k}: {v}\n" for k, v in before.items()),
                    "after": "".join(f"{k}: {v}\n" for k, v in after.items()),
                }
            )
        if module.check_mode:
            continue
        for verb in entry["actions"]:
            _systemctl(module, systemctl, result, verb, name)
    if module._diff and diffs:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
