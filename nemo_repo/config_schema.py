"""Config sections typed by the layers' own dataclasses, as OmegaConf structured configs.

`typed(schema, section, values)` merges one config section (a mapping) into
`OmegaConf.structured(schema)`: values are converted where OmegaConf can (1 -> 1.0, "true" -> True),
fields the section leaves out take the schema's defaults, and an unknown key or a value of the wrong
type raises with one line naming the full key:

    objective.beta: Value 'abc' of type 'str' could not be converted to Float

The dataclass's own checks (ranges, choices, cross-field) stay in its __post_init__ and run when the
caller constructs it from the typed values: `ObjectiveConfig(**typed(ObjectiveConfig, "objective", s))`.
Enum fields take their members' values as the YAML writes them (robust.mode: re); OmegaConf alone
would match member names.
"""

import typing
from enum import Enum

from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException


def describe(error: OmegaConfBaseException, section: str = "") -> str:
    """One line for an OmegaConf error: the full key (under `section`) and what is wrong with it."""
    key = ".".join(part for part in (section, str(error.full_key or error.key or "")) if part)
    if isinstance(error, (ConfigKeyError, ConfigAttributeError)):   # a key the node does not have
        parent = error.parent_node
        valid = f"; valid keys: {', '.join(sorted(map(str, parent)))}" if parent is not None else ""
        return f"unknown key {key}{valid}"
    return f"{key}: {error.msg.splitlines()[0]}"


def _enum_members(schema, section: str, values) -> dict:
    """`values` with the value of every Enum field replaced by its member."""
    hints = typing.get_type_hints(schema if isinstance(schema, type) else type(schema))
    members = dict(values)
    for name, kind in hints.items():
        if isinstance(kind, type) and issubclass(kind, Enum) and isinstance(members.get(name), str):
            choices = {member.value: member for member in kind}
            if members[name] not in choices:
                raise ValueError(f"{section}.{name}: {members[name]!r} is not one of "
                                 f"{', '.join(map(str, choices))}")
            members[name] = choices[members[name]]
    return members


def typed(schema, section: str, values) -> dict:
    """`values` typed by `schema` (a dataclass, or an instance whose values are the defaults);
    KeyError for an unknown key, ValueError for a wrong type, each naming `section`.<key>."""
    node = OmegaConf.structured(schema)
    OmegaConf.set_readonly(node, False)   # a frozen dataclass makes a read-only node
    try:
        return OmegaConf.to_container(OmegaConf.merge(node, _enum_members(schema, section, values)),
                                      throw_on_missing=True)
    except ConfigKeyError as error:
        raise KeyError(describe(error, section)) from error
    except OmegaConfBaseException as error:
        raise ValueError(describe(error, section)) from error
