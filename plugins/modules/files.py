#!/usr/bin/python
# Copyright: the hardened.platform authors
# MIT License (galaxy.yml)
"""Many files, directories and removals in one round trip (the action plugin renders)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: files
short_description: Put many rendered files, directories and removals on a host in one call
description:
  - One module call instead of one per file. The action plugin of the same name renders
    every template on the controller and sends the results together, and this module
    compares, writes and sets owner, group and mode for all of them. A converge that
    changes nothing costs one round trip per task instead of one or two per file.
  - Files are written atomically (a temporary file in the same directory, owner and mode
    set on it before it is renamed over the old one), so a secret never has wider
    permissions than the ones asked for, not even for a moment.
  - Supports check mode and diff mode (one diff per changed file).
  - The contents travel in the module's arguments (over SSH's standard input, never on a
    command line). Tasks that write secrets set C(no_log), as they would with template.
version_added: 1.1.0
author: hardened.platform authors
options:
  directories:
    description: Directories to create (with their parents) and give owner, group and mode.
    type: list
    elements: dict
    default: []
    suboptions:
      path: {description: The directory., type: path, required: true}
      owner: {description: Its owner., type: str}
      group: {description: Its group., type: str}
      mode: {description: Its mode (octal string)., type: raw}
      force:
        description: C(false) creates the directory only where none exists, and leaves an existing one alone.
        type: bool
        default: true
  files:
    description:
      - Files to write. The action plugin turns C(template) (a role template, rendered with
        the task's variables plus C(vars)), C(copy) (a file from the role's files/; a
        pattern such as C(pkg/*.py) copies every match into C(dest), a directory) or
        C(content) into C(content_b64).
      - The task's C(owner), C(group) and C(mode) apply to every file that does not set its own
        (to directories only C(owner) and C(group)).
    type: list
    elements: dict
    default: []
    suboptions:
      dest: {description: Where the file goes (a directory for a C(copy) pattern)., type: path, required: true}
      template: {description: A template of the role (templates/), rendered on the controller., type: str}
      vars: {description: Variables for C(template) only (e.g. C(item)), on top of the task's., type: dict}
      copy: {description: A file of the role (files/), or a pattern of them., type: str}
      content: {description: The file's text as given., type: str}
      content_b64: {description: The file's bytes, base64 (what the action plugin sends)., type: str}
      owner: {description: Its owner., type: str}
      group: {description: Its group., type: str}
      mode: {description: Its mode (octal string)., type: raw}
      force:
        description:
          - C(false) writes the file only where none exists, and then leaves it alone (contents,
            owner, group and mode), as copy's C(force=false).
        type: bool
        default: true
      validate:
        description:
          - A command run on the new file before it replaces the old one, with C(%s) for its path
            (as template's C(validate), without a shell). A failure leaves the old file in place
            and fails the task with the command's output. Not run in check mode.
        type: str
  directory_mode:
    description: The mode of the directories that do not set their own (the task's C(mode) is the files').
    type: raw
  owner:
    description: The owner of every file and directory that does not set its own.
    type: str
  group:
    description: The group of every file and directory that does not set its own.
    type: str
  mode:
    description: The mode of every file that does not set its own.
    type: raw
  existing:
    description:
      - Paths whose owner, group and mode are set only if they exist (a missing one is left
        alone, e.g. sensitive files that only some hosts have).
    type: list
    elements: dict
    default: []
    suboptions:
      path: {description: The path., type: path, required: true}
      owner: {description: Its owner., type: str}
      group: {description: Its group., type: str}
      mode: {description: Its mode (octal string)., type: raw}
  links:
    description:
      - Symbolic links to create or repoint (C(dest) -> C(src)), replaced atomically (a new
        link renamed over the old one), so that a reader never finds the path missing.
    type: list
    elements: dict
    default: []
    suboptions:
      dest: {description: The link., type: path, required: true}
      src: {description: What it points to (not checked; it may not exist yet)., type: str, required: true}
  backup:
    description:
      - Keep a copy of each file this call replaces (C(dest.PID.TIME~)), named in C(files) of
        the result, so that a later test (nginx -t) can put the old files back.
    type: bool
    default: false
  absent:
    description: Paths to remove (files, links or whole directories).
    type: list
    elements: path
    default: []
attributes:
  check_mode: {support: full}
  diff_mode: {support: full}
"""

EXAMPLES = r"""
- name: Render the units of the job
  hardened.platform.files:
    directories:
      - {path: /etc/systemd/system/backup.service.d, mode: "0755"}
    files:
      - {dest: /etc/systemd/system/backup.service, template: backup.service.j2, mode: "0644"}
      - {dest: /etc/systemd/system/backup.timer, template: unit.timer.j2, vars: {when: "03:00"}, mode: "0644"}
    absent: [/etc/systemd/system/backup-old.timer]
"""

RETURN = r"""
files:
  description: One entry per file, in order, with C(dest), C(changed) and C(backup_file) when one was kept.
  type: list
  elements: dict
  returned: always
changed_paths:
  description: The paths written, created, changed in owner/group/mode, or removed.
  type: list
  elements: str
  returned: always
"""

import base64
import grp
import os
import pwd
import shlex
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule

MAX_DIFF = 64 * 1024


class Refused(Exception):
    """A path this call cannot handle: the call fails, reporting what it wrote so far."""


def _octal(mode):
    if mode is None:
        return None
    text = str(mode)
    try:
        return int(text, 8)
    except ValueError:
        return None  # symbolic: set_fs_attributes_if_different applies it afterwards


def _ids(module, owner, group):
    try:
        uid = pwd.getpwnam(owner).pw_uid if owner else -1
        gid = grp.getgrnam(group).gr_gid if group else -1
    except KeyError as exc:
        raise Refused(f"unknown owner or group: {exc}") from None
    return uid, gid


def _text(data):
    if data is None or len(data) > MAX_DIFF:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _attributes(module, path, item, changed):
    args = {
        "path": path,
        "owner": item.get("owner"),
        "group": item.get("group"),
        "mode": item.get("mode"),
        "secontext": [None, None, None],
        "attributes": None,
    }
    return module.set_fs_attributes_if_different(args, changed)


def _directory(module, item, diffs, changed_paths):
    path = item["path"]
    changed = False
    if os.path.lexists(path) and not os.path.isdir(path):
        raise Refused(f"{path} exists and is not a directory")
    if item.get("force") is False and os.path.isdir(path):
        return
    if not os.path.isdir(path):
        changed = True
        if module._diff:
            diffs.append({"before_header": path, "after_header": path, "before": "", "after": "(directory)\n"})
        if module.check_mode:
            changed_paths.append(path)
            return
        os.makedirs(path)
    if _attributes(module, path, item, changed):
        changed_paths.append(path)


def _write(module, item, diffs, changed_paths, report):
    dest = item["dest"]
    if item.get("content_b64") is None:
        raise Refused(f"{dest}: no content (call the module through its action, hardened.platform.files)")
    new = base64.b64decode(item["content_b64"])
    if os.path.isdir(dest):
        raise Refused(f"{dest} is a directory")
    old = None
    if item.get("force") is False and os.path.lexists(dest):
        report.append({"dest": dest, "changed": False})
        return
    if os.path.lexists(dest):
        with open(dest, "rb") as handle:
            old = handle.read()
    entry = {"dest": dest, "changed": False}
    report.append(entry)
    if old == new:
        if _attributes(module, dest, item, False):
            changed_paths.append(dest)
            entry["changed"] = True
        return
    changed_paths.append(dest)
    entry["changed"] = True
    if module._diff:
        before, after = _text(old), _text(new)
        diff = {"before_header": dest, "after_header": dest}
        if before is None and old is not None or after is None:
            diff.update(before="(binary or large file)\n", after="(binary or large file, changed)\n")
        else:
            diff.update(before=before or "", after=after)
        diffs.append(diff)
    if module.check_mode:
        return
    directory = os.path.dirname(dest) or "."
    if not os.path.isdir(directory):
        raise Refused(f"the directory of {dest} does not exist")
    if module.params["backup"] and old is not None:
        entry["backup_file"] = module.backup_local(dest)
    mode = _octal(item.get("mode"))
    uid, gid = _ids(module, item.get("owner"), item.get("group"))
    if old is not None and os.path.isfile(dest):
        current = os.stat(dest)
        mode = current.st_mode & 0o7777 if mode is None and item.get("mode") is None else mode
        uid = current.st_uid if uid == -1 else uid
        gid = current.st_gid if gid == -1 else gid
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(dest)}.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(new)
            handle.flush()
            os.fchown(handle.fileno(), uid, gid)
            if mode is None and item.get("mode") is None:
                umask = os.umask(0)
                os.umask(umask)
                mode = 0o666 & ~umask
            if mode is not None:
                os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        if item.get("validate"):
            _validate(module, dest, item["validate"], tmp)
        os.replace(tmp, dest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _attributes(module, dest, item, True)  # a symbolic mode, if one was given


def _validate(module, dest, command, path):
    if "%s" not in command:
        raise Refused(f"{dest}: validate needs %s for the file's path: {command}")
    rc, out, err = module.run_command(command.replace("%s", shlex.quote(path)), use_unsafe_shell=False)
    if rc != 0:
        detail = (err or out).strip()[-2000:]
        raise Refused(f"{dest}: the new file failed validation ({command}, exit {rc}): {detail}")


def _link(module, item, diffs, changed_paths):
    dest, src = item["dest"], item["src"]
    current = os.readlink(dest) if os.path.islink(dest) else None
    if current == src:
        return
    if os.path.lexists(dest) and current is None:
        raise Refused(f"{dest} exists and is not a symbolic link")
    changed_paths.append(dest)
    if module._diff:
        diffs.append({"before_header": dest, "after_header": dest,
                      "before": f"-> {current}\n" if current else "", "after": f"-> {src}\n"})  # fmt: skip
    if module.check_mode:
        return
    tmp = os.path.join(os.path.dirname(dest) or ".", f".{os.path.basename(dest)}.{os.getpid()}.link")
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(src, tmp)
    try:
        os.replace(tmp, dest)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def _remove(module, path, diffs, changed_paths):
    if not os.path.lexists(path):
        return
    changed_paths.append(path)
    if module._diff:
        diffs.append({"before_header": path, "after_header": path, "before": "(present)\n", "after": ""})
    if module.check_mode:
        return
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def main():
    attrs = {"owner": {"type": "str"}, "group": {"type": "str"}, "mode": {"type": "raw"}}
    module = AnsibleModule(
        argument_spec={
            "directories": {
                "type": "list",
                "elements": "dict",
                "default": [],
                "options": {
                    "path": {"type": "path", "required": True},
                    "force": {"type": "bool", "default": True},
                    **attrs,
                },
            },
            "files": {
                "type": "list",
                "elements": "dict",
                "default": [],
                # template, vars, copy and content are the action plugin's: it sends content_b64
                "options": {
                    "dest": {"type": "path", "required": True},
                    "template": {"type": "str"},
                    "vars": {"type": "dict"},
                    "copy": {"type": "str"},
                    "content": {"type": "str"},
                    "content_b64": {"type": "str"},
                    "validate": {"type": "str"},
                    "force": {"type": "bool", "default": True},
                    **attrs,
                },
            },
            # the task's defaults, applied by the action plugin
            "directory_mode": {"type": "raw"},
            **attrs,
            "absent": {"type": "list", "elements": "path", "default": []},
            "existing": {
                "type": "list",
                "elements": "dict",
                "default": [],
                "options": {"path": {"type": "path", "required": True}, **attrs},
            },
            "links": {
                "type": "list",
                "elements": "dict",
                "default": [],
                "options": {"dest": {"type": "path", "required": True}, "src": {"type": "str", "required": True}},
            },
            "backup": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    changed_paths, diffs, report = [], [], []
    try:
        for item in module.params["directories"]:
            _directory(module, item, diffs, changed_paths)
        for item in module.params["files"]:
            _write(module, item, diffs, changed_paths, report)
        for item in module.params["links"]:
            _link(module, item, diffs, changed_paths)
        for path in module.params["absent"]:
            _remove(module, path, diffs, changed_paths)
        for item in module.params["existing"]:
            if os.path.lexists(item["path"]) and _attributes(module, item["path"], item, False):
                changed_paths.append(item["path"])
    except (OSError, Refused) as exc:
        # what was written before the error is in the result, for a rollback to put back
        message = str(exc) if isinstance(exc, Refused) else f"{type(exc).__name__}: {exc}"
        module.fail_json(msg=message, files=report, changed_paths=changed_paths, changed=bool(changed_paths))
    result = {"changed": bool(changed_paths), "changed_paths": changed_paths, "files": report}
    if module._diff and diffs:
        result["diff"] = diffs
    module.exit_json(**result)


if __name__ == "__main__":
    main()
