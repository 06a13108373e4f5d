"""A YAML reader that remembers line numbers and refuses the traps of YAML 1.1.

- `1e-4`, `5e3` and friends are floats (PyYAML's YAML 1.1 resolver reads them as strings);
- a key given twice in one mapping is an error, not a silent overwrite;
- every mapping is a `LineDict`, which knows the line of each of its keys.
"""

import re
from typing import Any

import yaml

from sweeper.domain.errors import SearchSpaceError

_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class LineDict(dict):
    """A mapping read from YAML: `line` is where it starts, `key_lines[k]` where `k` is."""

    line: int = 0
    key_lines: dict


class _Loader(yaml.SafeLoader):
    path = None

    def construct_mapping(self, node, deep=False):
        self.flatten_mapping(node)
        mapping = LineDict()
        mapping.line = node.start_mark.line + 1
        mapping.key_lines = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in mapping.key_lines:
                raise SearchSpaceError(
                    f"duplicated key; each key may appear once per mapping, "
                    f"but it is also at line {mapping.key_lines[key]}",
                    path=self.path, line=line, key=str(key),
                )
            mapping.key_lines[key] = line
            mapping[key] = self.construct_object(value_node, deep=True)
        return mapping


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _Loader.construct_mapping)


def from_mapping(value: Any) -> Any:
    """A space given as Python data (dicts, lists, scalars) in the shape `load` returns, without line numbers:
    errors then name the key path alone (e.g. params.units.low)."""
    if isinstance(value, dict):
        mapping = LineDict((key, from_mapping(item)) for key, item in value.items())
        mapping.line, mapping.key_lines = None, {}
        return mapping
    if isinstance(value, (list, tuple)):
        return [from_mapping(item) for item in value]
    return value


def load(text: str, path: str | None = None) -> Any:
    """Parse YAML text; syntax errors become `SearchSpaceError` with the line."""

    loader = _Loader(text)
    loader.path = path
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise SearchSpaceError(f"invalid YAML: {exc.problem or exc.context}", path=path, line=line) from None
    except yaml.YAMLError as exc:
        raise SearchSpaceError(f"invalid YAML: {exc}", path=path) from None
    finally:
        loader.dispose()
