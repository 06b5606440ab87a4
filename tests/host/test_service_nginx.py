"""Placeholder: nginx is installed, enabled and running."""


def test_nginx_running(host):
    svc = host.service("nginx")
    assert svc.is_enabled
    assert svc.is_running
