"""Settings: the example config loads, and every kind of mistake names file, line and field."""

from __future__ import annotations

import ipaddress

import pytest

from redirector.cli.main import default_config
from redirector.config.settings import (
    ConfigError,
    load_settings,
    parse_duration,
    parse_listen,
    parse_settings,
)
from tests.support import ROOT

GOOD = """\
[redirector]
listen = "127.0.0.1:9090"
master = "http://mirror.contribs.org/smeserver"
max_lag = "8h"
poll_interval = "5m"
trusted_proxies = ["10.0.0.0/8", "::1/128"]

[[mirror]]
name = "nluug"
http = "http://ftp.nluug.nl/os/Linux/distr/smeserver/"
https = "https://ftp.nluug.nl/os/Linux/distr/smeserver"
country = "nl"
latitude = 52.37
longitude = 4.90
weight = 100
exclude = ["obsolete", "/releases/testing/"]
ipv6 = true
"""


def test_example_config_loads() -> None:
    s = load_settings(ROOT / "examples" / "mirrors.toml")
    names = [m.name for m in s.mirrors]
    assert names[:3] == ["ibiblio", "nluug", "mirrorservice"]
    assert len(names) == 9
    assert s.max_lag == 8 * 3600
    assert s.redis_url is None
    assert (ROOT / "examples" / "mirrors.toml").read_text() == default_config().read_text()


def test_good_config_is_normalized() -> None:
    s = parse_settings(GOOD, "x.toml")
    m = s.mirrors[0]
    assert s.master == "http://mirror.contribs.org/smeserver/"
    assert (s.listen_host, s.listen_port) == ("127.0.0.1", 9090)
    assert m.https == "https://ftp.nluug.nl/os/Linux/distr/smeserver/"
    assert m.country == "NL"
    assert m.exclude == ("obsolete/", "releases/testing/")
    assert s.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    assert s.poll_interval == 300


def _break(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new)


@pytest.mark.parametrize(
    ("text", "line", "field", "words"),
    [
        pytest.param(_break("weight = 100", "wieght = 100"), 15, "field 'wieght'", "unknown key",
                     id="unknown-mirror-key"),
        pytest.param(_break('listen = "127.0.0.1:9090"', 'lisen = "x"'), 2, "field 'lisen'",
                     "unknown key", id="unknown-top-key"),
        pytest.param(_break('http = "http://ftp', 'http = "htp://ftp'), 10, "field 'http'",
                     "not a http URL", id="bad-url"),
        pytest.param(_break("latitude = 52.37", "latitude = 91.5"), 13, "field 'latitude'",
                     "out of range", id="latitude-range"),
        pytest.param(_break("longitude = 4.90", "longitude = -181"), 14, "field 'longitude'",
                     "out of range", id="longitude-range"),
        pytest.param(_break('max_lag = "8h"', 'max_lag = "8 hours"'), 4, "field 'max_lag'",
                     "duration", id="bad-duration"),
        pytest.param(GOOD + GOOD.split("\n\n", 1)[1], 19, "field 'name'", "duplicate name",
                     id="duplicate-name"),
        pytest.param(_break('country = "nl"', 'country = "NLD"'), 12, "field 'country'",
                     "two-letter", id="country"),
        pytest.param(_break('"10.0.0.0/8"', '"10.0.0.0/33"'), 6, "field 'trusted_proxies'",
                     "not an IP network", id="bad-network"),
        pytest.param(_break("ipv6 = true", 'ipv6 = "yes"'), 17, "field 'ipv6'", "true or false",
                     id="bad-bool"),
        pytest.param(_break('exclude = ["obsolete", ', 'exclude = ["../", '), 16,
                     "field 'exclude'", "'..'", id="exclude-dotdot"),
        pytest.param(_break('master = "http://mirror.contribs.org/smeserver"\n', ""), 1,
                     "field 'master'", "required", id="no-master"),
        pytest.param(_break('listen = "127.0.0.1:9090"', 'listen = "127.0.0.1:99999"'), 2,
                     "field 'listen'", "out of range", id="bad-port"),
        pytest.param(_break('name = "nluug"', 'name = "bad name"'), 9, "field 'name'",
                     "letters", id="bad-name"),
        pytest.param(GOOD + "[other]\n", 18, "other", "unknown table", id="unknown-table"),
        pytest.param("[redirector\n", 1, "", "not valid TOML", id="toml-syntax"),
    ],
)  # fmt: skip
def test_config_errors_name_file_line_and_field(
    text: str, line: int, field: str, words: str
) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(text, "/etc/redirector/mirrors.toml")
    msg = str(info.value)
    assert msg.startswith(f"/etc/redirector/mirrors.toml:{line}: "), msg
    assert field in msg
    assert words in msg


def test_missing_mirror_url_and_file() -> None:
    text = _break('http = "http://ftp.nluug.nl/os/Linux/distr/smeserver/"\n', "")
    text = text.replace('https = "https://ftp.nluug.nl/os/Linux/distr/smeserver"\n', "")
    with pytest.raises(ConfigError, match=r"x.toml:8: mirror 'nluug' field 'http': an http"):
        parse_settings(text, "x.toml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings("/nonexistent/mirrors.toml")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("8h", 28800.0), ("5m", 300.0), ("1h30m", 5400.0), ("250ms", 0.25), ("1d", 86400.0),
     (90, 90.0), ("2.5s", 2.5)],
)  # fmt: skip
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "8", "h", "8x", "5m8", "-5m", True, [1]])
def test_bad_durations(text: object) -> None:
    with pytest.raises((ValueError, TypeError), match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:8080", ("127.0.0.1", 8080)), ("[::1]:80", ("::1", 80)),
     (":8080", ("0.0.0.0", 8080))],  # noqa: S104  # parsing, not binding
)  # fmt: skip
def test_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


def test_network_rules_and_https_policy_are_read() -> None:
    text = _break(
        "ipv6 = true",
        'netblocks = ["145.100.0.0/16", "2001:610::/32"]\nasns = [1103, "AS1125"]\n'
        "private = true\ncountry_only = true\ncontinent_only = true",
    )
    top = (
        '[redirector]\nhttps_policy = "master"\nhttps_min_mirrors = 3\n'
        'geoip_databases = ["/g/city-ipv4.mmdb", "/g/city-ipv6.mmdb", "/g/asn.mmdb"]\n'
    )
    text = text.replace("[redirector]\n", top)
    s = parse_settings(text, "x.toml")
    m = s.mirrors[0]
    assert m.netblocks == (
        ipaddress.ip_network("145.100.0.0/16"),
        ipaddress.ip_network("2001:610::/32"),
    )
    assert m.asns == (1103, 1125)
    assert (m.private, m.country_only, m.continent_only) == (True, True, True)
    assert m.ipv6 is None  # unset: the poller finds out
    assert (s.https_policy, s.https_min_mirrors) == ("master", 3)
    assert [p.name for p in s.geoip_databases] == ["city-ipv4.mmdb", "city-ipv6.mmdb", "asn.mmdb"]
    assert (s.closeness_km, s.closeness_ratio) == (300.0, 0.5)


@pytest.mark.parametrize(
    ("new", "field", "words"),
    [
        ('netblocks = ["145.100.0.0/33"]', "field 'netblocks'", "not an IP network"),
        ('netblocks = ["0.0.0.0/0"]', "field 'netblocks'", "holds every address"),
        ("asns = [0]", "field 'asns'", "not an AS number"),
        ('asns = ["ASx"]', "field 'asns'", "not an AS number"),
        ("asns = [3320, 3320]", "field 'asns'", "listed twice"),
        ("asns = 3320", "field 'asns'", "list of AS numbers"),
        ("private = true", "field 'private'", "needs netblocks or asns"),
        ('country_only = "yes"', "field 'country_only'", "true or false"),
    ],
)
def test_bad_network_rules_name_line_and_field(new: str, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(_break("ipv6 = true", new), "x.toml")
    msg = str(info.value)
    assert msg.startswith("x.toml:17: "), msg
    assert field in msg
    assert words in msg


@pytest.mark.parametrize(
    ("new", "field", "words"),
    [
        ('https_policy = "http"', "field 'https_policy'", '"mirrors" or "master"'),
        ("https_min_mirrors = 0", "field 'https_min_mirrors'", "out of range"),
        ('geoip_databases = ["a.mmdb", "a.mmdb"]', "field 'geoip_databases'", "listed twice"),
        ('geoip_databases = "a.mmdb"', "field 'geoip_databases'", "list of file paths"),
        ('geoip_max_age = "0s"', "field 'geoip_max_age'", "longer than zero"),
    ],
)
def test_bad_top_level_keys_of_network_routing(new: str, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(GOOD.replace("[redirector]\n", f"[redirector]\n{new}\n"), "x.toml")
    msg = str(info.value)
    assert msg.startswith("x.toml:2: "), msg
    assert field in msg
    assert words in msg


def test_the_views_budget_keys() -> None:
    s = parse_settings(GOOD, "x.toml")
    assert (s.views_network_burst, s.views_network_rate) == (20, 2.0)
    assert (s.views_total_burst, s.views_total_rate, s.views_exempt) == (60, 10.0, ())
    keys = 'views_network_rate = 0.5\nviews_exempt = ["192.0.2.10", "2001:db8::/32"]'
    s = parse_settings(GOOD.replace("[redirector]\n", f"[redirector]\n{keys}\n"), "x.toml")
    assert s.views_network_rate == 0.5
    assert s.views_exempt == (
        ipaddress.ip_network("192.0.2.10/32"),
        ipaddress.ip_network("2001:db8::/32"),
    )


@pytest.mark.parametrize(
    ("new", "field", "words"),
    [
        ("views_network_burst = 0", "field 'views_network_burst'", "out of range"),
        ("views_network_rate = 0", "field 'views_network_rate'", "out of range"),
        ('views_total_rate = "fast"', "field 'views_total_rate'", "expected a number"),
        ("views_total_burst = 1.5", "field 'views_total_burst'", "whole number"),
        ('views_exempt = ["office"]', "field 'views_exempt'", "not an IP network"),
    ],
)
def test_bad_views_budget_keys_name_line_and_field(new: str, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(GOOD.replace("[redirector]\n", f"[redirector]\n{new}\n"), "x.toml")
    msg = str(info.value)
    assert msg.startswith("x.toml:2: "), msg
    assert field in msg
    assert words in msg
