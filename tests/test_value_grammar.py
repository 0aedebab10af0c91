"""One strict value grammar at every door (rules.values): the same generated bad value is refused the same way by
Python (``parse_query`` / ``load_query_text``: InputError), HTTP (``/v1/eligibility`` and ``/v1/credits``: 422
``invalid_input``) and the CLI (``dacp evaluate`` and ``dacp credit``: exit 3), and nothing is logged.

Bad values: signs, spaces, exponents, underscores, non-ASCII digits, a final newline (which ``$`` would let
through), more digits than Python converts (4,300), times past the representable range after their offset."""

from __future__ import annotations

import json
import shutil
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from rules.audit.log import DecisionLog
from rules.cli.run import main
from rules.engine.query import load_query_text, parse_query
from rules.errors import InputError
from rules.http.app import create_app
from rules.http.auth import Token, hash_token
from rules.http.config import ServiceConfig
from rules.settings import Settings
from rules.values import decimal_value, identifier, time_value
from tests.support import ROOT
from tests.support.ledger_workload import write_prices

TOKEN = "grammar-clearing-" + "g" * 32
CONFIG = ServiceConfig(tokens=(Token("clearing-1", "clearing", hash_token(TOKEN)),))
AUTH = {"Authorization": f"Bearer {TOKEN}"}
BTC = json.loads((ROOT / "examples" / "queries" / "btc-eligible.json").read_text())
CREDIT = {"account": "ACC-1001", "participant": "FCM-ALPHA", "asset": "BTC", "quantity": "1",
          "addresses": ["bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"]}

_NON_ASCII_DIGITS = st.characters(categories=["Nd"]).filter(lambda c: not "0" <= c <= "9")
_GOOD = st.from_regex(r"[0-9]{1,6}(\.[0-9]{1,6})?", fullmatch=True)
BAD_DECIMALS = st.one_of(
    st.sampled_from(["12.5\n", "١٢", "+1", " 2 ", "1e1", "1_0", "-1", "1.", ".5", "NaN", "Infinity", "0x10", "1,5",
                     "1" * 4301, "9" * 5000, "1." + "0" * 5000, "12.5\r", "\n12.5"]),
    st.builds(lambda g, s: g + s, _GOOD, st.sampled_from(["\n", " ", "\t", "e2", "E+1", "_", "\u00a0", "\u200b"])),
    st.builds(lambda p, g: p + g, st.sampled_from(["+", "-", " ", "\n", "_"]), _GOOD),
    st.builds(lambda g, c: g + c, _GOOD, _NON_ASCII_DIGITS),
    st.builds(lambda n: "1" * n, st.integers(4300, 6000)),
)
BAD_TIMES = st.one_of(
    st.sampled_from(["9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+05:00", "2026-11-20T14:00:00Z\n",
                     "٢٠٢٦-11-20T14:00:00Z", "2026-11-20T14:00:00", "2026-02-30T00:00:00Z", "2026-11-20T14:00:00+99:00",
                     " 2026-11-20T14:00:00Z", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z"]),
    st.builds(lambda y, off: f"{y:04d}-01-01T00:00:00{off}", st.sampled_from([1, 2, 9999, 9998]),
              st.sampled_from(["+05:00", "-05:00", "+14:00", "-12:00"])),
)
BAD_IDS = st.one_of(
    st.sampled_from(["ACC-1001\n", "ACC-1001\r\n", " ACC-1001", "ACC 1001", "ÄCC-1001", "ACC-١٠٠١", "-ACC", "", "A" * 81]),
    st.builds(lambda s: "ACC-" + s, st.sampled_from(["\n", "\x00", "é", "\u200b", "!"])),
)
BAD_ASSETS = st.sampled_from(["BTC\n", "BTC ", " BTC", "btc\n", "ВТС", "BTC-X", "", "B" * 13])
PROP = hsettings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def doors(tmp_path_factory):
    d = tmp_path_factory.mktemp("grammar")
    shutil.copytree(ROOT / "policies", d / "policies", ignore=shutil.ignore_patterns("tests"))
    log = d / "log.sqlite"
    (d / "dacp.toml").write_text(f'policies = "{d / "policies"}"\nlog = "{log}"\n[approvals]\nrequired = false\n'
                                 '[ethereum]\nrpc_url = "http://127.0.0.1:9"\n[bitcoin]\nrpc_url = "http://127.0.0.1:9"\n')
    write_prices(d / "prices.yaml")
    s = Settings(policies=d / "policies", log=log, approvals={"required": False},
                 ethereum={"rpc_url": "http://127.0.0.1:9"}, bitcoin={"rpc_url": "http://127.0.0.1:9"})
    with TestClient(create_app(s, CONFIG)) as client:
        yield {"dir": d, "client": client, "log": log, "config": str(d / "dacp.toml")}


def _entries(log) -> int:
    return DecisionLog(log).count() if log.exists() else 0


def _refused_everywhere(doors, query: dict | None, credit: dict | None, cli_credit: list[str] | None,
                        capsys, raw: str | None = None) -> None:
    """The same bad value at every door: InputError, 422 invalid_input, exit 3; the log unchanged."""
    before = _entries(doors["log"])
    c, d = doors["client"], doors["dir"]
    text = raw if raw is not None else json.dumps(query)
    with pytest.raises(InputError):
        load_query_text(text, "query")
    if query is not None:
        with pytest.raises(InputError):
            parse_query(query)
    r = c.post("/v1/eligibility", content=text.encode(), headers={**AUTH, "Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input", r.text
    f = d / "q.json"
    f.write_text(text, encoding="utf-8")
    assert main(["evaluate", str(f), "--config", doors["config"]]) == 3
    if raw is None or "\n" not in raw:
        f.write_text(text + "\n", encoding="utf-8")
        assert main(["evaluate", "--batch", str(f), "--config", doors["config"]]) == 3
    if credit is not None:
        r = c.post("/v1/credits", content=json.dumps(credit).encode(),
                   headers={**AUTH, "Idempotency-Key": "grammar-1", "Content-Type": "application/json"})
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input", r.text
    if cli_credit is not None:
        args = ["credit", "--account", "ACC-1001", "--participant", "FCM-ALPHA", "--asset", "BTC", "--quantity", "1",
                "--address", CREDIT["addresses"][0], "--idempotency-key", "grammar-1",
                "--prices", str(d / "prices.yaml"), "--config", doors["config"]]
        for flag, value in zip(cli_credit[::2], cli_credit[1::2]):
            if flag in args:
                args[args.index(flag) + 1] = f"{flag}={value}"
                args.pop(args.index(flag))
            else:
                args.append(f"{flag}={value}")  # --flag=value: a value that starts with '-' is a value
        assert main(args) == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err, err
    assert _entries(doors["log"]) == before


@PROP
@given(v=BAD_DECIMALS)
def test_a_bad_decimal_is_refused_by_every_door(doors, capsys, v):
    with pytest.raises(InputError):
        decimal_value(v, "quantity")
    _refused_everywhere(doors, {**BTC, "quantity": v}, {**CREDIT, "quantity": v}, ["--quantity", v], capsys)


@PROP
@given(v=BAD_TIMES)
def test_a_bad_time_is_refused_by_every_door(doors, capsys, v):
    with pytest.raises(InputError):
        time_value(v, "as_of")
    _refused_everywhere(doors, {**BTC, "as_of": v}, {**CREDIT, "as_of": v}, ["--as-of", v], capsys)


@PROP
@given(v=BAD_IDS, field=st.sampled_from(["account", "participant"]))
def test_a_bad_identifier_is_refused_by_every_door(doors, capsys, v, field):
    with pytest.raises(InputError):
        identifier(v, field)
    _refused_everywhere(doors, {**BTC, field: v}, {**CREDIT, field: v}, [f"--{field}", v], capsys)


@PROP
@given(v=BAD_ASSETS)
def test_a_bad_asset_is_refused_by_every_door(doors, capsys, v):
    with pytest.raises(InputError):
        identifier(v, "asset", "asset")
    _refused_everywhere(doors, {**BTC, "asset": v}, {**CREDIT, "asset": v}, ["--asset", v], capsys)


@pytest.mark.parametrize("flag, value", [("--account", "ACC-1001\n"), ("--participant", "FCM ALPHA"),
                                         ("--asset", "BTC\n"), ("--custodian", "anchorage\n"), ("--address", ""),
                                         ("--address", "x" * 201)])
def test_dacp_credit_checks_its_identifiers_before_it_opens_anything(doors, capsys, tmp_path, flag, value):
    """Bad input writes nothing: refused (exit 3) before the ledger database is created or a node asked."""
    ledger = tmp_path / "ledger.sqlite"
    args = ["credit", "--account", "ACC-1001", "--participant", "FCM-ALPHA", "--asset", "BTC", "--quantity", "1",
            "--address", CREDIT["addresses"][0], "--idempotency-key", "early-1", "--ledger", str(ledger),
            "--prices", str(doors["dir"] / "prices.yaml"), "--config", doors["config"]]
    if flag in args:
        i = args.index(flag)
        args[i:i + 2] = [f"{flag}={value}"]
    else:
        args.append(f"{flag}={value}")
    assert main(args) == 3
    err = capsys.readouterr().err
    assert "Traceback" not in err and flag.lstrip("-").split("-")[0] in err, err
    assert not ledger.exists()


@PROP
@given(n=st.integers(4300, 8000), where=st.sampled_from(["quantity", "price_usd", "confirmations"]),
       frac=st.booleans())
def test_a_huge_number_token_is_refused_by_every_door(doors, capsys, n, where, frac):
    token = "7" * n + (".5" if frac else "")
    if where == "confirmations":
        doc = json.dumps({**BTC, "custody": {**BTC["custody"], "confirmations": 0}}).replace(
            '"confirmations": 0', f'"confirmations": {token}')
    else:
        doc = json.dumps(BTC).replace(f'"{where}": "{BTC[where]}"', f'"{where}": {token}')
    assert token in doc
    _refused_everywhere(doors, None, None, None, capsys, raw=doc)
    credit = json.dumps(CREDIT).replace('"quantity": "1"', f'"quantity": {token}')
    r = doors["client"].post("/v1/credits", content=credit.encode(),
                             headers={**AUTH, "Idempotency-Key": "grammar-2", "Content-Type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_input", r.text


def test_a_huge_yaml_integer_is_refused(doors, capsys):
    f = doors["dir"] / "q.yaml"
    f.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in BTC.items() if k != "quantity")
                 + f"quantity: {'1' * 5000}\n")
    with pytest.raises(InputError, match="too long"):
        load_query_text(f.read_text(), "q.yaml")
    assert main(["evaluate", str(f), "--config", doors["config"]]) == 3
    assert "Traceback" not in capsys.readouterr().err


def test_good_values_still_read_exactly():
    assert decimal_value("12.5", "q") == Decimal("12.5")
    assert decimal_value("0.000000000000000001", "q") == Decimal("1E-18")
    assert time_value("2026-11-20T09:00:00-05:00", "t").isoformat() == "2026-11-20T14:00:00+00:00"
    assert identifier("ACC-1001", "account") == "ACC-1001" and identifier("BTC", "asset", "asset") == "BTC"
