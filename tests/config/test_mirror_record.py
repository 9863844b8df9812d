"""The mirror record the wiki asks for: contact, bandwidth and weight, ssh, upstream, sync."""

from __future__ import annotations

from pathlib import Path

import pytest

from redirector.cli.main import main
from redirector.config.settings import (
    ConfigError,
    format_bandwidth,
    parse_bandwidth,
    parse_settings,
    weight_from_bandwidth,
)
from tests.support import ROOT

HEAD = '[redirector]\nmaster = "http://m.test/smeserver/"\n'


def mirror(name: str, extra: str = "") -> str:
    return (
        f'[[mirror]]\nname = "{name}"\nhttp = "http://{name}.test/"\ncountry = "NL"\n'
        f"latitude = 52.0\nlongitude = 5.0\n{extra}"
    )


def test_every_field_is_read() -> None:
    s = parse_settings(
        HEAD
        + mirror("hub", 'sync = "pull"\nupstream = "master"\nbandwidth = "10 Gbit/s"\n')
        + mirror(
            "leaf",
            'contact_name = "Jan Jansen"\ncontact_email = "jan@example.org"\n'
            'bandwidth = "100 Mbit/s"\nweight = 7\nsync = "push"\nssh_host = "Sync.Leaf.Test"\n'
            'ssh_port = 2222\nssh_user = "mirror"\nupstream = "hub"\n',
        ),
        "m.toml",
    )
    hub, leaf = s.mirrors
    assert (hub.sync, hub.upstream, hub.bandwidth, hub.weight) == ("pull", "master", 10**10, 1000)
    assert leaf.contact_name == "Jan Jansen"
    assert leaf.contact_email == "jan@example.org"
    assert (leaf.bandwidth, leaf.weight) == (10**8, 7)  # a stated weight wins
    assert (leaf.sync, leaf.ssh_host, leaf.ssh_port, leaf.ssh_user) == (
        "push", "sync.leaf.test", 2222, "mirror",
    )  # fmt: skip
    assert leaf.upstream == "hub"
    assert s.status_email == "obfuscate"


def test_unstated_fields_stay_unstated() -> None:
    (m,) = parse_settings(HEAD + mirror("a"), "m.toml").mirrors
    assert (m.contact_name, m.contact_email, m.bandwidth, m.ssh_host, m.upstream, m.sync) == (
        None, None, None, None, None, None,
    )  # fmt: skip
    assert (m.weight, m.ssh_port) == (100, 22)


@pytest.mark.parametrize(
    ("text", "bits"),
    [
        ("1Gbit", 10**9), ("100 Mbit/s", 10**8), ("1 Gbps", 10**9), ("100Mbps", 10**8),
        ("10 Mb/s", 10**7), ("12.5 MB/s", 10**8), ("80 kB/s", 640_000), ("2 gbit", 2 * 10**9),
        ("1 Tbit/s", 10**12), ("64 kbit", 64_000),
    ],
)  # fmt: skip
def test_parse_bandwidth(text: str, bits: int) -> None:
    assert parse_bandwidth(text) == bits


@pytest.mark.parametrize("text", ["100", "fast", "1 Gbit/h", "0 Mbit", "-1 Gbit", "1 Xbit", ""])
def test_parse_bandwidth_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"bandwidth|out of range"):
        parse_bandwidth(text)


def test_weight_rule() -> None:
    # One unit per 10 Mbit/s: 1 Gbit/s is the default weight of 100.
    assert weight_from_bandwidth(10**9) == 100
    assert weight_from_bandwidth(10**8) == 10
    assert weight_from_bandwidth(1000) == 1  # never 0: a tiny mirror still gets a share
    assert weight_from_bandwidth(10**15) == 1_000_000
    assert format_bandwidth(10**9) == "1 Gbit/s"
    assert format_bandwidth(2_500_000) == "2.5 Mbit/s"
    assert format_bandwidth(999) == "999 bit/s"


@pytest.mark.parametrize(
    ("body", "line", "where", "words"),
    [
        (mirror("a", 'upstream = "nobody"\n'), 9, "mirror 'a' field 'upstream'",
         "'nobody' is no configured mirror"),
        (mirror("a", 'upstream = "a"\n'), 9, "mirror 'a' field 'upstream'", "from itself"),
        (mirror("a", 'upstream = "b"\n') + mirror("b", 'upstream = "a"\n'), 9,
         "mirror 'a' field 'upstream'", "upstream loop: a -> b -> a"),
        (mirror("a", 'sync = "push"\n'), 9, "mirror 'a' field 'ssh_host'",
         "a push mirror needs ssh_host"),
        (mirror("a", 'sync = "rsync"\n'), 9, "mirror 'a' field 'sync'", 'use "push" or "pull"'),
        (mirror("a", 'contact_email = "jan(at)example.org"\n'), 9,
         "mirror 'a' field 'contact_email'", "not an email address"),
        (mirror("a", 'contact_email = "jan@localhost"\n'), 9,
         "mirror 'a' field 'contact_email'", "not an email address"),
        (mirror("a", 'bandwidth = 100\n'), 9, "mirror 'a' field 'bandwidth'", "expected a string"),
        (mirror("a", 'bandwidth = "lots"\n'), 9, "mirror 'a' field 'bandwidth'", "'1Gbit'"),
        (mirror("a", 'ssh_port = 70000\n'), 9, "mirror 'a' field 'ssh_port'", "out of range"),
        (mirror("a", 'ssh_user = "root; rm"\n'), 9, "mirror 'a' field 'ssh_user'", "user name"),
        (mirror("a", 'ssh_host = "bad host"\n'), 9, "mirror 'a' field 'ssh_host'", "host name"),
        (mirror("a", 'contact_name = ""\n'), 9, "mirror 'a' field 'contact_name'", "1..200"),
    ],
)  # fmt: skip
def test_check_config_refuses_with_file_line_field(
    body: str, line: int, where: str, words: str
) -> None:
    with pytest.raises(ConfigError) as e:
        parse_settings(HEAD + body, "mirrors.toml")
    assert str(e.value).startswith(f"mirrors.toml:{line}: {where}: ")
    assert words in e.value.message


def test_status_email_setting() -> None:
    for mode in ("obfuscate", "omit", "show"):
        text = HEAD + f'status_email = "{mode}"\n' + mirror("a")
        assert parse_settings(text, "m.toml").status_email == mode
    with pytest.raises(ConfigError, match=r"m.toml:3: \[redirector\] field 'status_email'"):
        parse_settings(HEAD + 'status_email = "plain"\n' + mirror("a"), "m.toml")


def test_check_config_long_shows_the_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "m.toml"
    f.write_text(
        HEAD
        + mirror("hub", 'bandwidth = "1Gbit"\n')
        + mirror(
            "leaf",
            'contact_name = "Jan"\ncontact_email = "jan@example.org"\nsync = "push"\n'
            'ssh_host = "leaf.test"\nssh_user = "sync"\nupstream = "hub"\nweight = 5\n',
        )
    )
    assert main(["check-config", "--long", str(f)]) == 0
    out = capsys.readouterr().out
    assert "[hub]\n" in out
    assert "  weight         100 (bandwidth / 10 Mbit/s)\n" in out
    assert "  bandwidth      1 Gbit/s\n" in out
    assert "  contact_email  jan@example.org\n" in out
    assert "  ssh            sync@leaf.test:22\n" in out
    assert "  upstream       hub\n" in out
    assert "  weight         5\n" in out
    assert main(["check-config", str(f)]) == 0
    assert "NAME" in capsys.readouterr().out


def test_example_config_still_valid() -> None:
    example = ROOT / "examples" / "mirrors.toml"
    s = parse_settings(example.read_text(), example)
    assert all(m.upstream in (None, "master") or s.mirror(m.upstream) for m in s.mirrors)


def test_example_template_parses_when_uncommented() -> None:
    example = ROOT / "examples" / "mirrors.toml"
    text = example.read_text()
    template = text[text.index("# [[mirror]]") :]
    body = "\n".join(line.removeprefix("# ") for line in template.splitlines())
    m = parse_settings(text + "\n" + body, example).mirrors[-1]
    assert (m.name, m.sync, m.ssh_host, m.upstream, m.weight) == (
        "example", "push", "sync.example.org", "master", 100,
    )  # fmt: skip


def test_check_config_long_shows_the_network_rules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "m.toml"
    f.write_text(
        HEAD
        + mirror(
            "campus",
            'netblocks = ["145.100.0.0/16"]\nasns = [1103]\nprivate = true\ncountry_only = true\n',
        )
        + mirror("plain")
    )
    assert main(["check-config", "--long", str(f)]) == 0
    out = capsys.readouterr().out
    assert "  netblocks      145.100.0.0/16\n" in out
    assert "  asns           AS1103\n" in out
    assert "  serves         only its networks and its country (NL)\n" in out
    assert "  ipv6           found by the poller\n" in out
    assert out.count("  serves ") == 1
