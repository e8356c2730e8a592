"""The scalar values of pipeline files: durations, memory sizes, capabilities, params' values
(scalars, or lists of them), and names of steps, params, env variables and secrets, each
checked with a message that says what fits."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field

NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
NAME_RE = re.compile(NAME_PATTERN)
PARAM_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_DURATION_RE = re.compile(
    r"^(?:(?P<d>\d+(?:\.\d+)?)d)?(?:(?P<h>\d+(?:\.\d+)?)h)?"
    r"(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?$"
)
_MEMORY_RE = re.compile(r"^(?P<n>\d+(?:\.\d+)?)\s*(?P<u>[bkmgt]?)(?:i?b)?$", re.IGNORECASE)
_MEMORY_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}

MAX_DURATION_S = 366 * 86400.0
MIN_MEMORY = 6 * 1024**2  # Docker refuses less
MAX_MEMORY = 2**63 - 1  # Docker's API takes an int64


def parse_duration(value: object) -> float:
    """'90s', '10m', '1h30m', '2d' or a number of seconds -> seconds (float, > 0).

    >>> parse_duration("1h30m"), parse_duration(45)
    (5400.0, 45.0)
    """
    if isinstance(value, bool):
        raise ValueError(
            "a duration is a string like '90s', '10m', '1h30m', or a number of seconds"
        )
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip().lower()
        match = _DURATION_RE.match(text) if text else None
        if match is None or not any(match.groupdict().values()):
            try:
                seconds = float(text)
            except ValueError:
                raise ValueError(
                    f"bad duration {value!r}: use '90s', '10m', '1h30m', or a number of seconds"
                ) from None
        else:
            parts = {k: float(v) if v else 0.0 for k, v in match.groupdict().items()}
            seconds = parts["d"] * 86400 + parts["h"] * 3600 + parts["m"] * 60 + parts["s"]
    else:
        raise ValueError(
            "a duration is a string like '90s', '10m', '1h30m', or a number of seconds"
        )
    if not seconds > 0:  # also refuses NaN
        raise ValueError(f"duration {value!r} must be more than zero")
    if seconds > MAX_DURATION_S:  # also refuses inf; timers overflow long before
        raise ValueError(f"duration {value!r} is longer than the limit of 366 days")
    return seconds


def parse_memory(value: object) -> int:
    """'512m', '4g', '4GiB' or a number of bytes -> bytes.

    >>> parse_memory("512m") == 512 * 1024**2
    True
    """
    if isinstance(value, bool):
        raise ValueError("memory is a size like '512m' or '4g', or a number of bytes")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (match := _MEMORY_RE.match(value.strip())):
        size = int(float(match["n"]) * _MEMORY_UNITS[match["u"].lower()])
    else:
        raise ValueError(f"bad memory size {value!r}: use a size like '512m' or '4g'")
    if size < MIN_MEMORY:
        raise ValueError(f"memory {value!r} is below Docker's minimum of 6m")
    if size > MAX_MEMORY:
        raise ValueError(f"memory {value!r} is too large")
    return size


# Linux capabilities (capabilities(7)), without their CAP_ prefix.
CAPABILITIES = frozenset(
    [
        "AUDIT_CONTROL",
        "AUDIT_READ",
        "AUDIT_WRITE",
        "BLOCK_SUSPEND",
        "BPF",
        "CHECKPOINT_RESTORE",
        "CHOWN",
        "DAC_OVERRIDE",
        "DAC_READ_SEARCH",
        "FOWNER",
        "FSETID",
        "IPC_LOCK",
        "IPC_OWNER",
        "KILL",
        "LEASE",
        "LINUX_IMMUTABLE",
        "MAC_ADMIN",
        "MAC_OVERRIDE",
        "MKNOD",
        "NET_ADMIN",
        "NET_BIND_SERVICE",
        "NET_BROADCAST",
        "NET_RAW",
        "PERFMON",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_ADMIN",
        "SYS_BOOT",
        "SYS_CHROOT",
        "SYS_MODULE",
        "SYS_NICE",
        "SYS_PACCT",
        "SYS_PTRACE",
        "SYS_RAWIO",
        "SYS_RESOURCE",
        "SYS_TIME",
        "SYS_TTY_CONFIG",
        "SYSLOG",
        "WAKE_ALARM",
    ]
)


def parse_capability(value: object) -> str:
    """A Linux capability's name, with or without `CAP_`, in any case -> its bare upper-case name.

    >>> parse_capability("cap_net_bind_service")
    'NET_BIND_SERVICE'
    """
    if not isinstance(value, str):
        raise ValueError(f"a capability is a name like 'NET_BIND_SERVICE', got {value!r}")
    name = value.strip().upper().removeprefix("CAP_")
    if name == "ALL":
        raise ValueError("capabilities: name each one a step needs; 'ALL' is not accepted")
    if name not in CAPABILITIES:
        raise ValueError(
            f"{value!r} is not a Linux capability (e.g. NET_BIND_SERVICE, SYS_PTRACE, NET_RAW)"
        )
    return name


_KIND_NAMES = {bool: "booleans", int: "whole numbers", float: "numbers", str: "text"}


def scalar_kind(value: object) -> type | None:
    """bool, int, float or str for a param's scalar value; None for anything else."""
    for kind in (bool, int, float, str):  # bool first: True is an int too
        if isinstance(value, kind):
            return kind
    return None


def list_item_kind(items: list[object]) -> type:
    """The type every item of a list param takes: that of its default's items (text when
    the default is empty; a number when whole numbers and numbers mix).

    >>> list_item_kind(["eu"]), list_item_kind([1, 0.5]), list_item_kind([])
    (<class 'str'>, <class 'float'>, <class 'str'>)
    """
    kinds = {scalar_kind(item) for item in items}
    if kinds == {int, float}:
        return float
    only = kinds.pop() if len(kinds) == 1 else None
    return only or str


def param_value(value: object) -> object:
    """A param's default as written: a scalar goes through; a list is checked (scalars of
    one type, at most MAX_LIST_ITEMS) and whole numbers mixed with numbers become floats.

    >>> param_value([1, 0.5])
    [1.0, 0.5]
    """
    if not isinstance(value, list):
        return value
    if len(value) > MAX_LIST_ITEMS:
        raise ValueError(
            f"a list param holds at most {MAX_LIST_ITEMS} items; this one has {len(value)}"
        )
    for index, item in enumerate(value):
        if scalar_kind(item) is None:
            what = "null" if item is None else repr(item)
            if isinstance(item, dict | list):
                what = "a mapping" if isinstance(item, dict) else "a list"
            raise ValueError(
                f"a list param holds text, numbers or booleans, not nested lists, mappings or "
                f"null: item {index + 1} is {what}"
            )
    kinds = {scalar_kind(item) for item in value}
    if kinds == {int, float}:
        return [float(item) for item in value if isinstance(item, int | float)]
    if len(kinds) > 1:
        found = " and ".join(sorted(_KIND_NAMES[k] for k in kinds if k is not None))
        raise ValueError(
            f"the items of a list param are all of one type (text, whole numbers, numbers or "
            f"booleans); this one mixes {found}"
            + ("; quote the others to make them all text" if str in kinds else "")
        )
    return value


def _env_name(key: str) -> str:
    if not ENV_RE.match(key):
        raise ValueError(f"env name {key!r} is not a valid variable name")
    if key.startswith("SLUICE_"):
        raise ValueError(f"env name {key!r}: the SLUICE_ prefix is the engine's own")
    return key


def _secret_name(key: str) -> str:
    if not ENV_RE.match(key):
        raise ValueError(f"secret name {key!r} is not a valid variable name")
    return key


def _param_name(key: str) -> str:
    if not PARAM_RE.match(key):
        raise ValueError(f"param name {key!r} must be a letter or _ followed by letters, digits, _")
    return key


Duration = Annotated[
    float,
    BeforeValidator(parse_duration, json_schema_input_type=str | float),
    Field(description="'90s', '10m', '1h30m', '2d' or a number of seconds"),
]
Memory = Annotated[
    int,
    BeforeValidator(parse_memory, json_schema_input_type=str | int),
    Field(description="'512m', '4g' or a number of bytes"),
]
Capability = Annotated[
    str,
    BeforeValidator(parse_capability, json_schema_input_type=str),
    Field(description="a Linux capability, e.g. 'NET_BIND_SERVICE' (CAP_ prefix optional)"),
]
ParamScalar = bool | int | float | str
# A list param's default: scalars of one type (ints and floats mix as floats), at most this many.
MAX_LIST_ITEMS = 256
ParamValue = Annotated[
    ParamScalar | Annotated[list[ParamScalar], Field(max_length=MAX_LIST_ITEMS)],
    BeforeValidator(param_value),
    Field(description="text, a number, a boolean, or a list of one of these (at most 256 items)"),
]
# Names are checked one by one (not per mapping) so an error points at the offending line.
EnvName = Annotated[str, AfterValidator(_env_name)]
SecretName = Annotated[str, AfterValidator(_secret_name)]
ParamName = Annotated[str, AfterValidator(_param_name)]
