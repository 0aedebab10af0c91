"""The two paths of ``rules.settings`` held to each other (issue 18): a value the plain path takes (no pydantic, for
start-up time) must come out exactly as pydantic makes it - same value, same type, same keys counted as set - and
the variables it reads must read as pydantic-settings' environment source reads them. Whatever it does not take,
pydantic decides (tests/http, tests/lifecycle and tests/ledger check those errors)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

import rules.settings as rs
from rules.errors import InputError
from rules.settings.checked import by_pydantic, read_environment

PROP = hsettings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
KEYS = {name: [f.name for f in dataclasses.fields(cls)] for name, (_, cls) in rs.SECTIONS.items()}
TEXTS = ["true", "false", "True", "1", "0", "yes", "5", "05", "5.5", "5.", "0.0", "-1", "1_0", " 7", "inf", "nan",
         "1e3", "python", "checked", "bogus", "", "a" * 64, "A" * 64, "{}", "[]", '{"a": "b"}', '["x"]']
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-2, 70_000), st.integers(2**53 - 2, 2**53 + 2),
                   st.floats(allow_nan=True), st.sampled_from(TEXTS), st.text(max_size=3),
                   st.builds(Path, st.sampled_from(["a", "/x/y", "."])), st.lists(st.sampled_from(["a", "b"]), max_size=2),
                   st.dictionaries(st.sampled_from(["BTC", "name"]), st.sampled_from(["x", "y"]), max_size=2),
                   st.lists(st.dictionaries(st.sampled_from(["name", "sha256"]), st.text(max_size=2)), max_size=2))


def flat(checked: dict[str, Any]) -> dict[str, Any]:
    """Every value with its type, and each section's keys counted as set."""
    out: dict[str, Any] = {k: (type(checked[k]), checked[k]) for k in rs.TOP}
    for name in rs.SECTIONS:
        sec = checked[name]
        out[name] = ({k: (type(v), v) for k, v in sec._values().items()}, sorted(sec.given()))
    return out


@st.composite
def values(draw) -> dict[str, Any]:
    kw = draw(st.dictionaries(st.sampled_from(["policies", "log", "engine", "source"]), VALUES, max_size=3))
    for name in draw(st.lists(st.sampled_from(list(rs.SECTIONS)), max_size=3, unique=True)):
        kw[name] = draw(st.dictionaries(st.sampled_from(KEYS[name]), VALUES, max_size=4))
    return kw


@PROP
@given(values())
def test_what_the_plain_path_takes_pydantic_makes_the_same(kw):
    plain = rs._plain(kw)
    try:
        checked = by_pydantic(kw)
    except InputError:
        assert plain is None  # pydantic refuses it: so must the plain path (it hands it over)
        return
    if plain is not None:
        assert flat(plain) == flat(checked)


@st.composite
def variables(draw) -> dict[str, str]:
    env = {}
    names = ["DACP_POLICIES", "DACP_LOG", "DACP_ENGINE", "DACP_SOURCE", "DACP_CONFIG", "DACP_CACHE_DIR", "DACP_ETH",
             "DACP_SERVICE", "DACP_APPROVALS_"]
    for _ in range(draw(st.integers(0, 4))):
        if draw(st.booleans()):
            name = draw(st.sampled_from(names))
        else:
            section = draw(st.sampled_from(list(rs.SECTIONS)))
            short = draw(st.sampled_from([rs.SECTIONS[section][0], section]))
            key = draw(st.sampled_from(KEYS[section] + ["bogus"]))
            name = f"DACP_{short}_{key}"
            name = name.upper() if draw(st.booleans()) else name
        env[name] = draw(st.sampled_from(["true", "5", "2.5", "x", "/p", '{"a": "b"}', '["k"]']))
    return rs._environment(env)


@PROP
@given(variables())
def test_the_variables_the_plain_path_reads_read_the_same_in_pydantic_settings(env):
    plain = rs._plain_environment(env)
    if plain is not None:
        assert plain == {k: v for k, v in read_environment(env).items() if k != "source"}


def test_a_plain_start_imports_no_pydantic(tmp_path):
    (tmp_path / "dacp.toml").write_text('log = "x.sqlite"\n[approvals]\ndemo_keys_in_policy_dir = true\nquorum = 2\n'
                                        '[service]\nport = 9000\ntimeout_keep_alive_s = 2\n')
    probe = ("import sys; from rules.settings import load_settings; "
             "s = load_settings(env={'DACP_ETH_RPC_URL': 'http://127.0.0.1:1', 'DACP_SERVICE_MAX_BATCH': '10'}); "
             "print(s.service.port, s.service.max_batch, s.ethereum.given(), 'pydantic' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["9000", "10", "{'rpc_url':", "'http://127.0.0.1:1'}", "False"]


def test_what_is_not_plain_gets_pydantic_and_its_errors_in_our_words(tmp_path):
    cfg = tmp_path / "dacp.toml"
    cfg.write_text("[service]\nport = 0\n")
    try:
        rs.load_settings(env={}, config=cfg)
        raise AssertionError("port 0 was taken")
    except InputError as e:
        assert str(e) == "[service] port: Input should be greater than or equal to 1 (got 0)"
    s = rs.load_settings(env={"DACP_SERVICE_PORT": "09100", "DACP_PRICES_FEEDS": '{"BTC": "0xabc"}'}, config=cfg)
    assert (s.service.port, s.prices.feeds) == (9100, {"BTC": "0xabc"})  # coerced by pydantic, as before


@pytest.mark.parametrize("key,value,allowed", [("http", '"spdy"', "'httptools' or 'h11'"),
                                               ("loop", '"trio"', "'uvloop' or 'asyncio'")])
def test_the_http_protocol_and_event_loop_are_one_of_theirs(tmp_path, key, value, allowed):
    cfg = tmp_path / "dacp.toml"
    cfg.write_text(f"[service]\n{key} = {value}\n")
    with pytest.raises(InputError) as e:
        rs.load_settings(env={}, config=cfg)
    assert f"[service] {key}" in str(e.value) and allowed in str(e.value)
    cfg.write_text('[service]\nhttp = "h11"\nloop = "asyncio"\n')
    s = rs.load_settings(env={}, config=cfg).service
    assert (s.http, s.loop) == ("h11", "asyncio")
    cfg.write_text("[service]\n")
    assert (rs.load_settings(env={}, config=cfg).service.http, rs.load_settings(env={}, config=cfg).service.loop) \
        == ("httptools", "uvloop")  # the defaults
