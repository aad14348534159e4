"""config_schema.typed: a config section typed by a (frozen) dataclass, errors naming the full key."""

import re
from dataclasses import dataclass
from enum import Enum

import pytest

from nemo_repo.config_schema import typed


class Colour(str, Enum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True)
class Paint:
    coats: int = 1
    gloss: float = 0.5
    colour: Colour = Colour.RED
    bounds: tuple[float, float] = (0.1, 1.0)
    label: str | None = None


def test_values_are_converted_and_defaults_filled():
    values = typed(Paint, "paint", {"coats": "2", "gloss": 1, "colour": "blue"})
    assert values == {"coats": 2, "gloss": 1.0, "colour": Colour.BLUE, "bounds": [0.1, 1.0], "label": None}
    assert typed(Paint(coats=3), "paint", {})["coats"] == 3     # an instance's values are the defaults


@pytest.mark.parametrize("values, error, message", [
    ({"gloss": "abc"}, ValueError, "paint.gloss: Value 'abc' of type 'str' could not be converted to Float"),
    ({"bounds": [0.1, "x"]}, ValueError, "paint.bounds[1]: Value 'x'"),
    ({"coats": None}, ValueError, "paint.coats: Incompatible value 'None'"),
    ({"colour": "green"}, ValueError, "paint.colour: 'green' is not one of red, blue"),
    ({"colur": "red"}, KeyError, "unknown key paint.colur; valid keys: bounds, coats, colour, gloss, label"),
])
def test_wrong_types_and_unknown_keys_name_the_key(values, error, message):
    with pytest.raises(error, match=re.escape(message)):
        typed(Paint, "paint", values)
