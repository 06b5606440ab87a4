"""hardened.platform.files (plugins/modules/files.py), the module that replaces one
template/copy/file call per file with one call per task: run as Ansible runs it (a
process with its arguments in a file), on a scratch directory."""

from __future__ import annotations

import base64
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "plugins" / "modules" / "files.py"
sys.path.insert(0, str(ROOT / "plugins" / "filter"))
from files_each import files_each  # noqa: E402


def _module_source():
    spec = importlib.util.spec_from_file_location("files_module", MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(tmp_path: Path, check: bool = False, diff: bool = True, **args) -> dict:
    spec = tmp_path / "args.json"
    spec.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check, "_ansible_diff": diff}}))
    proc = subprocess.run([sys.executable, str(MODULE), str(spec)], capture_output=True, text=True, check=False)
    return json.loads(proc.stdout)


def content(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o7777


def test_writes_files_and_directories_then_changes_nothing(tmp_path):
    target = tmp_path / "etc" / "app"
    args = {
        "directories": [{"path": str(target), "mode": "0750"}],
        "files": [{"dest": str(target / "a.conf"), "content_b64": content("a\n"), "mode": "0640"},
                  {"dest": str(target / "b.conf"), "content_b64": content("b\n"), "mode": "0600"}],
    }  # fmt: skip
    first = run(tmp_path, **args)
    assert first["changed"] is True, first
    assert (target / "a.conf").read_text() == "a\n" and mode(target / "a.conf") == 0o640
    assert mode(target / "b.conf") == 0o600 and mode(target) == 0o750
    assert [f["changed"] for f in first["files"]] == [True, True]
    second = run(tmp_path, **args)
    assert second["changed"] is False and second["changed_paths"] == [], second
    assert sorted(p.name for p in target.iterdir()) == ["a.conf", "b.conf"]  # no temporary file left


def test_check_mode_reports_the_diff_and_writes_nothing(tmp_path):
    dest = tmp_path / "new" / "x.conf"
    out = run(tmp_path, check=True, directories=[{"path": str(dest.parent)}],
              files=[{"dest": str(dest), "content_b64": content("hello\n")}])  # fmt: skip
    assert out["changed"] is True, out
    assert not dest.parent.exists()
    assert {"before_header": str(dest), "after_header": str(dest), "before": "", "after": "hello\n"} in out["diff"]


def test_a_mode_change_alone_is_a_change(tmp_path):
    dest = tmp_path / "x"
    dest.write_text("same\n")
    dest.chmod(0o644)
    out = run(tmp_path, files=[{"dest": str(dest), "content_b64": content("same\n"), "mode": "0600"}])
    assert out["changed"] is True and mode(dest) == 0o600, out


def test_backup_keeps_the_replaced_file(tmp_path):
    dest = tmp_path / "nginx.conf"
    dest.write_text("old\n")
    out = run(tmp_path, backup=True, files=[{"dest": str(dest), "content_b64": content("new\n")}])
    backup = Path(out["files"][0]["backup_file"])
    assert dest.read_text() == "new\n" and backup.read_text() == "old\n", out
    assert backup.name.startswith("nginx.conf.") and backup.name.endswith("~")


def test_an_existing_file_keeps_its_mode_when_none_is_given(tmp_path):
    dest = tmp_path / "secret"
    dest.write_text("v1\n")
    dest.chmod(0o600)
    run(tmp_path, files=[{"dest": str(dest), "content_b64": content("v2\n")}])
    assert dest.read_text() == "v2\n" and mode(dest) == 0o600


def test_absent_and_existing(tmp_path):
    gone = tmp_path / "gone"
    (gone / "sub").mkdir(parents=True)
    present = tmp_path / "shadow"
    present.write_text("x")
    present.chmod(0o644)
    existing = [{"path": str(present), "mode": "0600"}, {"path": str(tmp_path / "missing"), "mode": "0600"}]
    out = run(tmp_path, absent=[str(gone), str(tmp_path / "never")], existing=existing)
    assert not gone.exists() and mode(present) == 0o600, out
    assert not (tmp_path / "missing").exists()
    assert sorted(out["changed_paths"]) == sorted([str(gone), str(present)])


def test_a_failure_reports_what_was_already_written(tmp_path):
    ok = tmp_path / "first"
    second = tmp_path / "no" / "dir" / "second"
    out = run(tmp_path, files=[{"dest": str(ok), "content_b64": content("1\n")},
                               {"dest": str(second), "content_b64": content("2\n")}])  # fmt: skip
    assert out.get("failed") is True, out
    assert "does not exist" in out["msg"]
    assert out["files"][0] == {"dest": str(ok), "changed": True}


def test_a_directory_in_the_way_fails_loudly_and_is_left_alone(tmp_path):
    (tmp_path / "conf" / "inner").mkdir(parents=True)
    out = run(tmp_path, files=[{"dest": str(tmp_path / "conf"), "content_b64": content("x")}])
    assert out.get("failed") is True and "is a directory" in out["msg"], out
    assert (tmp_path / "conf" / "inner").is_dir()


def test_files_each_spreads_list_items_into_the_destination():
    sites = [{"name": "www"}, {"name": "analytics"}]
    variants = [{"suffix": ""}, {"suffix": "-cross-origin"}]
    pairs = [[s, v] for s in sites for v in variants]
    out = files_each(pairs, "/etc/nginx/platform/headers/{0[name]}{1[suffix]}.conf", "headers.conf.j2")
    assert [f["dest"] for f in out] == [
        "/etc/nginx/platform/headers/www.conf", "/etc/nginx/platform/headers/www-cross-origin.conf",
        "/etc/nginx/platform/headers/analytics.conf", "/etc/nginx/platform/headers/analytics-cross-origin.conf",
    ]  # fmt: skip
    assert out[1]["vars"] == {"item": pairs[1]} and out[1]["template"] == "headers.conf.j2"
    assert files_each(sites, "/s/{0[name]}.conf", "site.conf.j2")[0]["vars"] == {"item": sites[0]}


def test_documentation_parses_and_matches_the_argument_spec(monkeypatch):
    """ansible-doc and ansible-lint read DOCUMENTATION (a YAML error hides the module from
    ansible-lint); validate-modules cannot run offline, so the options are compared here."""
    module = _module_source()
    docs = {name: yaml.safe_load(getattr(module, name)) for name in ("DOCUMENTATION", "EXAMPLES", "RETURN")}
    captured = {}

    class Capture:
        def __init__(self, argument_spec, **kwargs):
            captured.update(argument_spec)
            raise SystemExit

    monkeypatch.setattr(module, "AnsibleModule", Capture)
    with pytest.raises(SystemExit):
        module.main()
    options = docs["DOCUMENTATION"]["options"]
    assert set(options) == set(captured)
    for name, option in options.items():
        assert option["type"] == captured[name]["type"], name
        assert set(option.get("suboptions") or {}) == set(captured[name].get("options") or {}), name
    assert docs["EXAMPLES"][0]["hardened.platform.files"]["files"]


def test_the_action_forwards_every_argument_to_the_module(tmp_path):
    """The action plugin (controller side) turns the task's arguments into the module's: a
    key it forgets is silently not done on the host (existing, once), so each is checked."""
    from unittest import mock

    spec = importlib.util.spec_from_file_location("files_action", ROOT / "plugins" / "action" / "files.py")
    action_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(action_module)
    task = mock.MagicMock(async_val=0, check_mode=False, diff=False)
    task.args = {
        "owner": "root", "group": "adm", "mode": "0640", "directory_mode": "0750", "backup": True,
        "directories": ["/etc/app", {"path": "/etc/app/d", "mode": "0700"}],
        "files": [{"dest": "/etc/app/a", "content": "a\n"}, {"dest": "/etc/app/b", "content": "b\n", "mode": "0600"}],
        "absent": ["/etc/app/old"],
        "existing": [{"path": "/etc/crontab", "mode": "0600"}],
    }  # fmt: skip
    connection = mock.MagicMock()
    connection._shell.tmpdir = str(tmp_path)
    action = action_module.ActionModule(task, connection, mock.MagicMock(), mock.MagicMock(), mock.MagicMock(),
                                        mock.MagicMock())  # fmt: skip
    with mock.patch.object(action, "_execute_module", return_value={"changed": False}) as execute:
        action.run(task_vars={})
    sent = execute.call_args.kwargs["module_args"]
    assert sent["files"] == [
        {"dest": "/etc/app/a", "content_b64": content("a\n"), "owner": "root", "group": "adm", "mode": "0640"},
        {"dest": "/etc/app/b", "content_b64": content("b\n"), "owner": "root", "group": "adm", "mode": "0600"},
    ]
    assert sent["directories"] == [
        {"path": "/etc/app", "owner": "root", "group": "adm", "mode": "0750"},
        {"path": "/etc/app/d", "owner": "root", "group": "adm", "mode": "0700"},
    ]
    assert sent["absent"] == ["/etc/app/old"] and sent["backup"] is True
    assert sent["existing"] == [{"path": "/etc/crontab", "mode": "0600"}]
    documented = set(yaml.safe_load(_module_source().DOCUMENTATION)["options"])
    # every option of the module is either sent or one the action resolves into what it sends
    assert set(sent) | {"owner", "group", "mode", "directory_mode"} == documented


def test_validate_keeps_the_old_file_when_the_new_one_fails(tmp_path):
    conf = tmp_path / "sshd.conf"
    conf.write_text("PermitRootLogin no\n")
    check = "grep -q '^PermitRootLogin no$' %s"
    bad = run(tmp_path, files=[{"dest": str(conf), "content_b64": content("PermitRootLogin yes\n"), "validate": check}])
    assert bad.get("failed") is True and "failed validation" in bad["msg"], bad
    assert conf.read_text() == "PermitRootLogin no\n"  # the old file still in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["args.json", "sshd.conf"]  # no temporary file left
    good = run(
        tmp_path, files=[{"dest": str(conf), "content_b64": content("PermitRootLogin no\nX 1\n"), "validate": check}]
    )
    assert good["changed"] is True and conf.read_text() == "PermitRootLogin no\nX 1\n", good
    refused = run(tmp_path, files=[{"dest": str(conf), "content_b64": content("y\n"), "validate": "true"}])
    assert refused.get("failed") is True and "needs %s" in refused["msg"], refused


def test_force_false_creates_a_missing_file_and_leaves_an_existing_one_alone(tmp_path):
    log = tmp_path / "access.log"
    item = {"dest": str(log), "content_b64": content(""), "mode": "0640", "force": False}
    first = run(tmp_path, files=[item])
    assert first["changed"] is True and log.exists() and mode(log) == 0o640, first
    log.write_text("a line nginx wrote\n")
    log.chmod(0o644)
    second = run(tmp_path, files=[item])
    assert second["changed"] is False, second
    assert log.read_text() == "a line nginx wrote\n" and mode(log) == 0o644


def test_links_are_made_repointed_and_then_left_alone(tmp_path):
    link = tmp_path / "fullchain.pem"
    first = run(tmp_path, links=[{"dest": str(link), "src": "selfsigned-cert.pem"}])
    assert first["changed"] is True and link.is_symlink() and str(link.readlink()) == "selfsigned-cert.pem", first
    again = run(tmp_path, links=[{"dest": str(link), "src": "selfsigned-cert.pem"}])
    assert again["changed"] is False, again
    check = run(tmp_path, check=True, links=[{"dest": str(link), "src": "/etc/letsencrypt/live/www/fullchain.pem"}])
    assert check["changed"] is True and str(link.readlink()) == "selfsigned-cert.pem", check  # check mode: untouched
    assert "-> /etc/letsencrypt/live/www/fullchain.pem" in check["diff"][0]["after"]
    moved = run(tmp_path, links=[{"dest": str(link), "src": "/etc/letsencrypt/live/www/fullchain.pem"}])
    assert moved["changed"] is True and str(link.readlink()) == "/etc/letsencrypt/live/www/fullchain.pem"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["args.json", "fullchain.pem"]  # no temporary link left
    (tmp_path / "plain").write_text("x")
    refused = run(tmp_path, links=[{"dest": str(tmp_path / "plain"), "src": "elsewhere"}])
    assert refused.get("failed") is True and "not a symbolic link" in refused["msg"], refused
