"""pydantic for what is not plain (``rules.settings``): models mirroring the dataclasses of
``rules.settings.sections`` (same names, keys, defaults, bounds and checks), pydantic-settings' environment
source, and pydantic's errors in our words. Imported only when a value needs it (start-up time)."""

from __future__ import annotations

import dataclasses
import typing
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

from pydantic import ConfigDict, Field, ValidationError, create_model, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from rules.errors import InputError
from rules.settings.sections import CHECKS, ENGINES, FIELDS, SECTIONS, TOP, TOP_DEFAULTS, Section

@lru_cache(maxsize=1)
def _models() -> tuple[Any, Any]:
    """pydantic models mirroring the dataclasses (same names, keys, defaults, bounds and checks), and the
    environment source; imported and built on first use only (start-up time)."""
    def check(fn: Callable[[Any], Any]) -> Any:
        def run(cls: Any, v: Any) -> Any:
            return fn(v)
        return run

    def fields(cls: type) -> dict[str, Any]:
        hints = typing.get_type_hints(cls)
        return {f.name: (hints[f.name], Field(default_factory=f.default_factory, **f.metadata)
                         if f.default_factory is not dataclasses.MISSING else Field(f.default, **f.metadata))
                for f in dataclasses.fields(cls)}

    sections = {}
    for name, (_, cls) in SECTIONS.items():
        checks = {f"check_{key}": field_validator(key)(check(fn)) for (sec, key), fn in CHECKS.items() if sec == name}
        sections[name] = (create_model(cls.__name__, __config__=ConfigDict(extra="forbid", frozen=True),
                                       __validators__=checks, **fields(cls)), Field(default_factory=dict))

    class Base(BaseSettings):
        model_config = SettingsConfigDict(frozen=True, extra="forbid")

        @classmethod
        def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                       **_: PydanticBaseSettingsSource) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings,)  # construction reads nothing else: load_settings() adds file and environment

    top = {"policies": Path, "log": Path, "engine": Literal["durable_rules", "python", "checked"], "source": str}
    first = {k: (top[k], TOP_DEFAULTS[k]) for k in ("policies", "log", "engine")}  # in the order of the errors
    model = create_model("Settings", __base__=Base, **first, **sections, source=(str, TOP_DEFAULTS["source"]))

    class _Environment(EnvSettingsSource):
        """pydantic-settings' environment source over the variables given (``_environment``), not os.environ."""

        def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]):
            self._given_env = env
            super().__init__(settings_cls, case_sensitive=False, env_prefix="DACP_", env_nested_delimiter="_",
                             env_nested_max_split=1)

        def _load_env_vars(self) -> Mapping[str, str | None]:
            return dict(self._given_env)

    return model, _Environment


def read_environment(variables: Mapping[str, str]) -> dict[str, Any]:
    """pydantic-settings' reading of the variables (``rules.settings._environment``): field -> value or table."""
    model, environment = _models()
    return environment(model, variables)()


def by_pydantic(values: Mapping[str, Any]) -> dict[str, Any]:
    """The values checked by pydantic, as the dataclasses; a bad one: ``InputError`` in our words.
    Section instances given are checked again from their values."""
    values = {k: (v._values() if isinstance(v, Section) else v) for k, v in values.items()}
    try:
        m = _models()[0](**values)
    except ValidationError as e:
        raise _input_error(e, values.get("source", "settings")) from None
    out: dict[str, Any] = {k: getattr(m, k) for k in TOP}
    for name, (_, cls) in SECTIONS.items():
        sec = getattr(m, name)
        out[name] = cls._build({k: getattr(sec, k) for k in sec.model_fields_set})
    return out


def _input_error(e: Any, source: str) -> InputError:
    """A pydantic error in our words: where (``[section] key``) and what, the first problem first."""
    problems = []
    for err in e.errors():
        loc = [str(x) for x in err.get("loc", ())]
        section = next((f for f, (short, _) in SECTIONS.items() if loc and loc[0] in (f, short)), None)
        where = f"[{section}] {'.'.join(loc[1:])}" if section and len(loc) > 1 else (".".join(loc) or source)
        problems.append((where, _message(err, section)))
    where, message = problems[0]
    if len(problems) > 1:
        message += "; also " + "; ".join(f"{w}: {m}" for w, m in problems[1:])
    return InputError(message, where)


def _message(err: Mapping[str, Any], section: str | None) -> str:
    kind, value = err.get("type", ""), err.get("input")
    if kind == "extra_forbidden":
        known = sorted(f.name for f in dataclasses.fields(SECTIONS[section][1])) if section else \
            sorted(set(FIELDS) - {"source"})
        return f"unknown settings {err['loc'][-1]} (known: {', '.join(known)})"
    if kind.startswith("int_"):
        return f"must be a whole number, not {value!r}"
    if kind.startswith("bool_"):
        return f"must be true or false, not {value!r}"
    if kind == "literal_error" and err.get("loc") == ("engine",):
        return f"unknown engine {value!r} (use one of {', '.join(ENGINES)})"
    if kind == "value_error":
        return str(err.get("ctx", {}).get("error", err.get("msg", "invalid")))
    return f"{err.get('msg', 'invalid')} (got {value!r})"
