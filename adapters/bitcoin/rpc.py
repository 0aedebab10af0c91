"""A small JSON-RPC 1.0 client for Bitcoin Core (and forks with the same RPC, e.g. litecoind).

Standard library only (``http.client``). It does three things a bare HTTP call does not:

* authentication from the node's cookie file, re-read on HTTP 401 because the node writes a new
  cookie every time it starts, or from rpcuser/rpcpassword;
* bounded retries with exponential backoff (``adapters.retry``) for transport failures (connection
  refused or reset, timeout, HTTP 503 "work queue depth exceeded") and for RPC error -28 "warming up";
  every call is also bounded in total time (``max_total_s``);
* mapping of Bitcoin Core's error shapes to short, stable ``EvidenceError`` reasons.

Numbers in responses are parsed with ``parse_float=Decimal`` so that BTC amounts are exact.
"""

from __future__ import annotations

import base64
import http.client
import itertools
import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import unquote, urlsplit

from adapters import retry, urls
from adapters.retry import RetryPolicy
from rules.errors import EvidenceError, InputError

__all__ = ["BitcoinRpcClient", "BitcoinRpcError"]

# Bitcoin Core RPC error codes (src/rpc/protocol.h) that get their own reason.
RPC_METHOD_NOT_FOUND = -32601
RPC_INVALID_PARAMETER = -8
RPC_IN_WARMUP = -28
RPC_INVALID_ADDRESS_OR_KEY = -5

_REASON_BY_CODE = {
    RPC_METHOD_NOT_FOUND: "method_not_found",
    RPC_INVALID_PARAMETER: "invalid_parameter",
    RPC_IN_WARMUP: "warming_up",
    RPC_INVALID_ADDRESS_OR_KEY: "invalid_address",
}

_MAX_RESPONSE_BYTES = 256 * 1024 * 1024  # a scantxoutset over many outputs can be large, but not unbounded


class BitcoinRpcError(EvidenceError):
    """An ``EvidenceError`` that also keeps what the node said (RPC code/message, HTTP status)."""

    def __init__(
        self,
        reason: str,
        message: str,
        *,
        method: str | None = None,
        code: int | None = None,
        rpc_message: str | None = None,
        http_status: int | None = None,
    ):
        super().__init__(reason, message)
        self.method = method
        self.code = code
        self.rpc_message = rpc_message
        self.http_status = http_status


class _Retryable(Exception):
    """Internal: wraps an error that the retry loop may try again."""

    def __init__(self, error: BitcoinRpcError):
        super().__init__(error.message)
        self.error = error


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"non-finite number {name} in JSON")


class BitcoinRpcClient:
    """JSON-RPC client for one node. Not thread-safe (it caches the cookie and a request id).

    ``url`` names scheme, host and port (``http://127.0.0.1:8332/``; a wallet endpoint such as
    ``/wallet/NAME`` may follow). Credentials come from exactly one of ``cookie_file``,
    ``user``/``password``, or the URL's own ``user:password@``; they never appear in ``source``.
    """

    def __init__(
        self,
        url: str,
        *,
        cookie_file: str | Path | None = None,
        user: str | None = None,
        password: str | None = None,
        timeout_s: float = 30.0,
        retries: int = 3,
        backoff_s: float = 0.5,
        max_total_s: float = 120.0,
    ):
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise InputError(f"RPC URL must look like http://HOST:PORT/, got {url!r}", "url")
        try:
            port = parts.port
        except ValueError:
            port = None
        if port is None:
            raise InputError(
                "RPC URL must name the port (bitcoind: 8332 main, 18332 testnet3, 48332 testnet4, "
                "38332 signet, 18443 regtest)",
                "url",
            )
        if parts.username is not None and (user is None and password is None and cookie_file is None):
            user, password = unquote(parts.username), unquote(parts.password or "")
        if cookie_file is not None and (user is not None or password is not None):
            raise InputError("give either cookie_file or user/password, not both", "cookie_file")
        if cookie_file is None and (user is None or password is None):
            raise InputError("RPC needs credentials: cookie_file, or both user and password", "user")
        for name, value in (("timeout_s", timeout_s), ("backoff_s", backoff_s), ("max_total_s", max_total_s)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise InputError(f"{name} must be a non-negative number, got {value!r}", name)
        if timeout_s <= 0 or max_total_s <= 0:
            raise InputError("timeout_s and max_total_s must be positive", "timeout_s")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InputError(f"retries must be a non-negative integer, got {retries!r}", "retries")

        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = port
        self._path = parts.path or "/"
        self.source = urls.endpoint(url, mask_keys=False, empty_path="/")
        self._cookie_file = Path(cookie_file).expanduser() if cookie_file is not None else None
        self._static_auth = None if self._cookie_file else self._basic(f"{user}:{password}")
        self._cookie_auth: str | None = None
        self.timeout_s = float(timeout_s)
        self.retries = retries
        self.backoff_s = float(backoff_s)
        self.max_total_s = float(max_total_s)
        self.policy = RetryPolicy(request_timeout_s=self.timeout_s, retries=retries, backoff_s=self.backoff_s,
                                  max_total_s=self.max_total_s)
        self._ids = itertools.count(1)

    def __repr__(self) -> str:
        auth = f"cookie_file={str(self._cookie_file)!r}" if self._cookie_file else "user/password"
        return f"BitcoinRpcClient({self.source!r}, {auth})"

    # ------------------------------------------------------------------ public

    def call(self, method: str, *params: Any, timeout_s: float | None = None) -> Any:
        """Call ``method`` and return its ``result``; raise ``BitcoinRpcError`` (an EvidenceError).

        ``timeout_s`` overrides the per-request socket timeout for a slow call (``scantxoutset``
        on mainnet takes tens of seconds); the total time of the call, retries included, stays
        within ``max(max_total_s, timeout_s)``.
        """
        per_request = self.timeout_s if timeout_s is None else float(timeout_s)
        deadline = time.monotonic() + max(self.max_total_s, per_request)

        def give_up(r: Exception, stop: retry.Stop) -> NoReturn:
            assert isinstance(r, _Retryable)
            err, n = r.error, stop.attempts
            raise BitcoinRpcError(
                err.reason,
                f"{err.message} (gave up after {n} attempt{'s' if n != 1 else ''})",
                method=err.method,
                code=err.code,
                rpc_message=err.rpc_message,
                http_status=err.http_status,
            ) from None

        return retry.call(
            lambda: self._attempt(method, list(params), per_request, deadline),
            self.policy,
            transient=lambda _: True,  # only what _attempt wraps in _Retryable
            errors=(_Retryable,),
            give_up=give_up,
            remaining=lambda: deadline - time.monotonic(),
        )

    # ------------------------------------------------------------------ internals

    @staticmethod
    def _basic(userpass: str) -> str:
        return "Basic " + base64.b64encode(userpass.encode("utf-8")).decode("ascii")

    def _read_cookie(self, method: str) -> str:
        assert self._cookie_file is not None
        try:
            text = self._cookie_file.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise BitcoinRpcError(
                "unauthorized",
                f"cannot read RPC cookie file {self._cookie_file} ({e.strerror or e}); the node writes it "
                "when it starts and deletes it when it stops: is the node running with this datadir?",
                method=method,
            ) from None
        if ":" not in text:
            raise BitcoinRpcError(
                "unauthorized", f"RPC cookie file {self._cookie_file} is not in user:password form", method=method
            )
        return self._basic(text)

    def _auth_header(self, method: str, refresh: bool = False) -> str:
        if self._static_auth is not None:
            return self._static_auth
        if refresh or self._cookie_auth is None:
            self._cookie_auth = self._read_cookie(method)
        return self._cookie_auth

    def _err(self, reason: str, what: str, method: str, **kw: Any) -> BitcoinRpcError:
        return BitcoinRpcError(reason, f"{method} at {self.source}: {what}", method=method, **kw)

    def _post(self, body: bytes, auth: str, timeout: float, method: str) -> tuple[int, bytes]:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = cls(self._host, self._port, timeout=timeout)
        try:
            conn.request(
                "POST",
                self._path,
                body=body,
                headers={"Content-Type": "application/json", "Authorization": auth},
            )
            resp = conn.getresponse()
            data = resp.read(_MAX_RESPONSE_BYTES + 1)
            if len(data) > _MAX_RESPONSE_BYTES:
                raise self._err("bad_response", f"response larger than {_MAX_RESPONSE_BYTES} bytes", method)
            return resp.status, data
        except ConnectionRefusedError:
            raise _Retryable(self._err("node_unreachable", "connection refused (is the node running?)", method))
        except TimeoutError:
            raise _Retryable(self._err("timeout", f"no answer within {timeout:.3g} s", method))
        except http.client.HTTPException as e:
            # A malformed status line or headers: whatever answered is not speaking HTTP/JSON-RPC.
            raise self._err("bad_response", f"malformed HTTP response ({type(e).__name__}: {e})", method) from None
        except OSError as e:  # reset, broken pipe, DNS failure, no route...
            raise _Retryable(self._err("node_unreachable", f"transport error ({type(e).__name__}: {e})", method))
        finally:
            conn.close()

    def _attempt(self, method: str, params: list[Any], per_request: float, deadline: float) -> Any:
        request_id = next(self._ids)
        body = json.dumps({"jsonrpc": "1.0", "id": request_id, "method": method, "params": params}).encode()
        refreshed = False
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Retryable(self._err("timeout", "call exceeded its total time budget", method))
            status, data = self._post(body, self._auth_header(method), min(per_request, remaining), method)
            if status == 401 and self._cookie_file is not None and not refreshed:
                # The node may have restarted and written a new cookie: read it again, once.
                self._auth_header(method, refresh=True)
                refreshed = True
                continue
            break
        if status == 401:
            raise self._err("unauthorized", "HTTP 401: the node refused the RPC credentials", method, http_status=401)
        if status == 403:
            raise self._err(
                "unauthorized", "HTTP 403: the node refused this client (check -rpcallowip)", method, http_status=403
            )
        if status == 503:
            raise _Retryable(
                self._err("http_error", "HTTP 503: node busy (work queue depth exceeded)", method, http_status=503)
            )
        try:
            doc = json.loads(data, parse_float=Decimal, parse_constant=_reject_constant)
        except (ValueError, UnicodeDecodeError):
            snippet = data[:80].decode("utf-8", "replace")
            if status != 200:
                raise self._err("http_error", f"HTTP {status} with a non-JSON body {snippet!r}", method, http_status=status)
            raise self._err("bad_response", f"body is not JSON: {snippet!r}", method, http_status=status) from None
        if not isinstance(doc, dict) or "result" not in doc or "error" not in doc:
            raise self._err("bad_response", "JSON is not a JSON-RPC response (no result/error)", method, http_status=status)
        if doc.get("id") != request_id:
            raise self._err(
                "bad_response", f"response id {doc.get('id')!r} does not match request id {request_id}", method
            )
        error = doc["error"]
        if error is not None:
            code = error.get("code") if isinstance(error, dict) else None
            message = error.get("message") if isinstance(error, dict) else str(error)
            code = code if isinstance(code, int) and not isinstance(code, bool) else None
            reason = _REASON_BY_CODE.get(code, "rpc_error") if code is not None else "rpc_error"
            err = self._err(
                reason, f"RPC error {code}: {message}", method, code=code, rpc_message=message, http_status=status
            )
            if code == RPC_IN_WARMUP:
                raise _Retryable(err)
            raise err
        if status != 200:
            raise self._err("http_error", f"HTTP {status} without an RPC error", method, http_status=status)
        return doc["result"]
