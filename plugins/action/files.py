# Copyright: the hardened.platform authors
# MIT License (galaxy.yml)
"""Controller side of hardened.platform.files: render every template and read every file
here, then make a single call to the module on the host (see plugins/modules/files.py)."""

from __future__ import annotations

import base64
import glob
import os

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.text.converters import to_bytes
from ansible.plugins.action import ActionBase

SOURCES = ("template", "copy", "content")
ATTRS = ("owner", "group", "mode")


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(("directories", "files", "links", "absent", "existing", "directory_mode", "backup", *ATTRS))

    def _render(self, name: str, extra: dict, task_vars: dict) -> bytes:
        lookup = self._shared_loader_obj.lookup_loader.get(
            "ansible.builtin.template", loader=self._loader, templar=self._templar
        )
        try:
            return to_bytes(lookup.run([name], variables=task_vars, template_vars=extra or {})[0])
        except Exception as exc:  # the template's own error, with its name in front
            raise AnsibleActionFail(f"template {name}: {exc}") from exc

    def _read(self, name: str) -> bytes:
        path = self._find_needle("files", name)
        with open(path, "rb") as handle:
            return handle.read()

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp
        args = self._task.args
        defaults = {k: args[k] for k in ATTRS if args.get(k) is not None}

        def with_defaults(item: dict) -> dict:
            own = {k: item[k] for k in (*ATTRS, "validate", "force") if item.get(k) is not None}
            return {**defaults, **own}

        files = []
        for item in args.get("files") or []:
            if not isinstance(item, dict) or not item.get("dest"):
                raise AnsibleActionFail(f"each of files needs a dest: {item!r}")
            given = [k for k in SOURCES if k in item]
            if len(given) != 1:
                raise AnsibleActionFail(f"{item['dest']}: give exactly one of {', '.join(SOURCES)}")
            unknown = set(item) - {*SOURCES, *ATTRS, "dest", "vars", "validate", "force"}
            if unknown:
                raise AnsibleActionFail(f"{item['dest']}: unknown keys {sorted(unknown)}")
            if "copy" in item and glob.has_magic(item["copy"]):
                # a pattern in the role's files/: every match goes into dest, a directory
                folder, pattern = os.path.split(item["copy"])
                matches = sorted(glob.glob(os.path.join(self._find_needle("files", folder), pattern)))
                if not matches:
                    raise AnsibleActionFail(f"{item['copy']}: no file matches in the role's files/")
                for path in matches:
                    with open(path, "rb") as handle:
                        data = handle.read()
                    files.append(
                        {
                            "dest": os.path.join(item["dest"], os.path.basename(path)),
                            "content_b64": base64.b64encode(data).decode(),
                            **with_defaults(item),
                        }
                    )
                continue
            if "template" in item:
                data = self._render(item["template"], item.get("vars"), task_vars)
            elif "copy" in item:
                data = self._read(item["copy"])
            else:
                data = to_bytes(item["content"])
            files.append({"dest": item["dest"], "content_b64": base64.b64encode(data).decode(), **with_defaults(item)})
        directories = []
        for item in args.get("directories") or []:
            item = {"path": item} if isinstance(item, str) else item
            # the task's owner and group apply to directories too; its mode is a file's, they
            # take directory_mode
            directories.append(
                {
                    "path": item["path"],
                    **{k: v for k, v in defaults.items() if k != "mode"},
                    **({"mode": args["directory_mode"]} if args.get("directory_mode") else {}),
                    **{k: item[k] for k in (*ATTRS, "force") if item.get(k) is not None},
                }
            )
        module_args = {
            "files": files,
            "directories": directories,
            "links": [{"dest": item["dest"], "src": item["src"]} for item in args.get("links") or []],
            "absent": list(args.get("absent") or []),
            "existing": [dict(item) for item in args.get("existing") or []],
            "backup": bool(args.get("backup", False)),
        }
        result.update(self._execute_module(
            module_name="hardened.platform.files", module_args=module_args, task_vars=task_vars
        ))  # fmt: skip
        return result
