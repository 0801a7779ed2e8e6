"""The SSRF policy: metadata and link-local addresses refused in every encoding, at save time and
on the address a connection really goes to (a resolver stub; nothing but 127.0.0.1 is dialled)."""
from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest

from gateway.errors import InvalidRequest, UpstreamError
from gateway.providers import ssrf, transport
from gateway.providers.base import UpstreamRequest
from gateway.services.admin import catalog_admin
from tests.helpers import add_provider, make_key

# 169.254.169.254 as resolvers accept it, and IPv6 forms that carry it.
METADATA_SPELLINGS = ["169.254.169.254", "2852039166", "0xA9FEA9FE", "0xa9.0xfe.0xa9.0xfe",
                      "0251.0376.0251.0376", "169.254.43518", "169.16689662", "169.254.169.254."]
METADATA_V6 = ["::ffff:169.254.169.254", "::ffff:a9fe:a9fe", "64:ff9b::a9fe:a9fe", "64:ff9b:1::a9fe:a9fe",
               "2002:a9fe:a9fe::1", "2001:0:4136:e378:8000:63bf:5601:5601", "::169.254.169.254",
               "::ffff:0:a9fe:a9fe", "fd00:ec2::254", "fd00:ec2::23", "fe80::1%eth0"]
NEVER = ["100.100.100.200", "100.64.0.1", "100.127.255.254", "0.0.0.0", "0.1.2.3", "224.0.0.1",
         "255.255.255.255", "169.254.170.2", "::", "ff02::1", "::ffff:100.100.100.200",
         "64:ff9b::6464:64c8", "2002:6464:64c8::"]


@pytest.mark.parametrize("ip", METADATA_V6 + NEVER + ["169.254.169.254"])
def test_never_allowed_addresses_even_with_private_upstreams_on(ip):
    for allow_private in (False, True):
        with pytest.raises(ssrf.BlockedAddress):
            ssrf.check_address(ip, allow_private)


@pytest.mark.parametrize("host", METADATA_SPELLINGS)
def test_numeric_spellings_read_as_the_resolver_reads_them(host):
    assert ssrf.literal_address(host) == ssrf.ipaddress.ip_address("169.254.169.254")


@pytest.mark.parametrize("ip", ["127.0.0.1", "10.1.2.3", "192.168.0.10", "172.16.5.4", "::1", "fc00::1",
                                "::ffff:10.0.0.1", "64:ff9b::a00:1", "2002:a00:1::1"])
def test_private_addresses_only_when_allowed(ip):
    with pytest.raises(ssrf.BlockedAddress):
        ssrf.check_address(ip, False)
    ssrf.check_address(ip, True)


@pytest.mark.parametrize("ip", ["8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"])
def test_public_addresses_allowed(ip):
    ssrf.check_address(ip, False)


def _url(host: str) -> str:
    return f"http://[{host.replace('%', '%25')}]/v1" if ":" in host else f"http://{host}/v1"


@pytest.mark.parametrize("host", METADATA_SPELLINGS + METADATA_V6 + ["100.100.100.200", "100.64.0.1"])
def test_saving_a_metadata_url_is_refused(sqlite_app, host):
    assert sqlite_app.config["ALLOW_PRIVATE_UPSTREAMS"] is True      # self-hosted models allowed
    with sqlite_app.app_context(), pytest.raises(InvalidRequest) as e:
        catalog_admin.save_provider("evil", "openai", base_url=_url(host), api_key="sk-upstream-123456789")
    assert e.value.param == "base_url" and "never allowed" in e.value.message


@pytest.fixture
def resolver(monkeypatch):
    """A resolver stub: names in `answers` resolve as told; the only address dialled is 127.0.0.1."""
    answers: dict[str, list[str]] = {}
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect
    dialled: list = []

    def getaddrinfo(host, port, *args, **kw):
        if host not in answers:
            return real_getaddrinfo(host, port, *args, **kw)
        ip = answers[host].pop(0) if len(answers[host]) > 1 else answers[host][0]
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        addr = (ip, port, 0, 0) if family == socket.AF_INET6 else (ip, port)
        return [(family, socket.SOCK_STREAM, 6, "", addr)]

    def connect(sock, addr):
        dialled.append(addr[0])
        assert addr[0] == "127.0.0.1", f"the test tried to dial {addr[0]}"
        return real_connect(sock, addr)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    return SimpleNamespace(answers=answers, dialled=dialled)


@pytest.mark.parametrize("ip", ["169.254.169.254", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe",
                                "fd00:ec2::254", "100.100.100.200"])
def test_a_name_resolving_to_metadata_is_refused_at_save_time(sqlite_app, resolver, ip):
    resolver.answers["metadata.example.test"] = [ip]
    with sqlite_app.app_context(), pytest.raises(InvalidRequest) as e:
        catalog_admin.save_provider("evil", "openai", base_url="http://metadata.example.test/v1",
                                    api_key="sk-upstream-123456789")
    assert e.value.param == "base_url"


@pytest.mark.parametrize("ip", ["169.254.169.254", "::ffff:169.254.169.254", "2002:a9fe:a9fe::1",
                                "fd00:ec2::254", "100.100.100.200"])
def test_the_connect_time_guard_refuses_metadata_with_private_allowed(resolver, ip):
    resolver.answers["metadata.example.test"] = [ip]
    t = transport.Transport(transport.Timeouts(1, 1, 1), 4, allow_private=True)
    with pytest.raises(UpstreamError) as e:
        t.send(UpstreamRequest("http://metadata.example.test/v1/chat/completions", {}, b"{}"))
    assert e.value.code == "upstream_blocked" and ip not in e.value.message
    assert resolver.dialled == []


def test_dns_rebinding_after_save_is_caught_at_connect(sqlite_app, resolver, mock):
    # Saved while the name pointed at the (allowed) loopback mock; it now answers with metadata.
    port = mock.rsplit(":", 1)[1]
    resolver.answers["rebind.example.test"] = ["127.0.0.1", "169.254.169.254"]
    add_provider(sqlite_app, "rebind", "openai", f"http://rebind.example.test:{port}/v1", ["m=echo"])
    key = make_key(sqlite_app)
    resolver.dialled.clear()
    r = sqlite_app.test_client().post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                                      json={"model": "m", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 502 and r.json["error"]["code"] == "upstream_blocked"
    assert "169.254" not in r.json["error"]["message"]
    assert resolver.dialled == []


def test_display_url_drops_credentials_and_query():
    assert ssrf.display_url("https://u:p@api.example.com:8443/v1?key=secret#x") == "https://api.example.com:8443/v1"
    assert ssrf.display_url("http://[::1]:8080/v1") == "http://[::1]:8080/v1"
