"""The network policy's decisions, in-process: what a sandbox may reach, and what the egress
proxy makes of a request. The live attacks are in test_escape.py."""

from __future__ import annotations

import ipaddress

import pytest

from fnhost.run.network import (
    DEFAULT_INDEX_HOSTS,
    NetworkPolicy,
    address_allowed,
    host_port,
    own_addresses,
    parse_networks,
    parse_request_head,
)
from fnhost.settings import Settings

ip = ipaddress.ip_address
INTERNET = NetworkPolicy("internet")


@pytest.mark.parametrize(
    "address, why",
    [
        ("127.0.0.1", "loopback"),
        ("127.0.0.2", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "private"),  # carrier-grade NAT
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:10.0.0.1", "private"),
        ("2002:7f00:1::", "loopback"),  # 6to4 of 127.0.0.1
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("0.0.0.0", "unicast"),
        ("224.0.0.1", "unicast"),
    ],
)
def test_internet_refuses_the_host_private_and_link_local(address: str, why: str) -> None:
    reason = address_allowed(INTERNET, ip(address))
    assert reason is not None and why in reason, (address, reason)


@pytest.mark.parametrize("address", ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"])
def test_internet_allows_public_addresses(address: str) -> None:
    assert address_allowed(INTERNET, ip(address)) is None


def test_the_hosts_own_addresses_are_refused_even_when_public() -> None:
    public = ip("203.0.114.5")  # stands for a public address this host has
    assert address_allowed(INTERNET, public) is None
    assert "address of this host" in (address_allowed(INTERNET, public, own={public}) or "")
    assert all(isinstance(a, ipaddress.IPv4Address | ipaddress.IPv6Address) for a in own_addresses())


def test_stricter_policies_and_the_operators_allow_list() -> None:
    allow = parse_networks(["10.20.0.0/16", "192.0.2.7"])
    for mode in ("internet", "api-only"):
        policy = NetworkPolicy(mode, allow=allow)  # type: ignore[arg-type]
        assert address_allowed(policy, ip("10.20.3.4")) is None
        assert address_allowed(policy, ip("192.0.2.7")) is None
        assert address_allowed(policy, ip("10.21.0.1")) is not None
    assert address_allowed(NetworkPolicy("api-only"), ip("93.184.216.34")) is not None
    assert address_allowed(NetworkPolicy("none", allow=allow), ip("10.20.3.4")) is not None
    assert not NetworkPolicy("api-only").egress and NetworkPolicy("api-only").api
    assert not NetworkPolicy("none").egress and not NetworkPolicy("none").api
    assert NetworkPolicy("api-only", allow=allow).egress


def test_a_build_adds_exactly_its_indexes() -> None:
    build = NetworkPolicy("none").for_build(["http://127.0.0.1:9999/simple", "https://pkgs.example.com/simple"])
    assert build.allow_hosts == frozenset({("127.0.0.1", 9999), ("pkgs.example.com", 443)})
    assert build.egress and not build.allow  # 'none' keeps no operator destinations
    assert NetworkPolicy().for_build([]).allow_hosts == frozenset(DEFAULT_INDEX_HOSTS)
    assert host_port("http://Index.Example:8080/simple") == ("index.example", 8080)


def test_proxy_requests_are_parsed_strictly() -> None:
    assert parse_request_head(b"CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org\r\n\r\n")[:3] == ("CONNECT", "pypi.org", 443)
    assert parse_request_head(b"CONNECT [::1]:5432 HTTP/1.1\r\n\r\n")[1:3] == ("::1", 5432)
    method, host, port, head = parse_request_head(
        b"GET http://example.com/a?b=1 HTTP/1.1\r\nHost: example.com\r\nProxy-Authorization: x\r\n\r\n"
    )
    assert (method, host, port) == ("GET", "example.com", 80)
    assert head.startswith(b"GET /a?b=1 HTTP/1.1\r\n") and b"Proxy-Authorization" not in head
    for bad in (b"GET /relative HTTP/1.1\r\n\r\n", b"CONNECT nohost HTTP/1.1\r\n\r\n",
                b"GET https://x/ HTTP/1.1\r\n\r\n", b"garbage\r\n\r\n"):
        with pytest.raises(ValueError):
            parse_request_head(bad)


def test_settings_refuse_a_bad_allow_list_and_give_the_api_port() -> None:
    with pytest.raises(ValueError, match="FNHOST_NETWORK_ALLOW"):
        Settings(network_allow=["not-a-network"])
    assert Settings(port=8123).sandbox_api_port() == 8123
    assert Settings(public_url="https://fnhost.example.com").sandbox_api_port() == 8000
