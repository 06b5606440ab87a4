"""files_each: the `files` list of hardened.platform.files for one template rendered per item.

    nginx_sites | hardened.platform.files_each('/etc/nginx/platform/sites/{0[name]}.conf', 'site.conf.j2')

gives one entry per site: dest from the format string (the item is argument 0; an item that
is a list, e.g. from `product`, is spread: {0[name]}{1[suffix]}), the template, and the item
as the template's `item`, exactly as a loop over the template module would have it.
"""

from __future__ import annotations

from typing import Any


def files_each(items: list[Any], dest: str, template: str, **attrs: Any) -> list[dict[str, Any]]:
    out = []
    for item in items or []:
        args = list(item) if isinstance(item, list | tuple) else [item]
        out.append({"dest": dest.format(*args), "template": template, "vars": {"item": item}, **attrs})
    return out


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"files_each": files_each}
