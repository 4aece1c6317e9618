"""YAML with positions: the document as plain data plus where each value (and key) sits in the file, so
that every problem names its file, line and column. Bounded: size, alias expansion, duplicate keys."""

from __future__ import annotations

__all__ = ["Positions", "parse", "MAX_BYTES", "MAX_VALUES"]

import re
from pathlib import Path
from typing import Any

import yaml

from .. import schema
from ..errors import ConfigProblem

# -- YAML with positions -------------------------------------------------------------------------

Positions = dict[tuple, tuple[str, int, int]]  # key path -> (file, line, column); (path + ("<key>",)) for keys


class _Loader(yaml.SafeLoader):
    pass


def parse(path: Path, shown: str, problems: list[ConfigProblem],
           misreads: list[tuple[tuple, ConfigProblem]] | None = None) -> tuple[Any, Positions]:
    """The document as plain data plus where each value (and key) sits in the file; YAML 1.1
    misreadings go to `misreads` (reported where validation finds nothing else wrong)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as e:
        problems.append(ConfigProblem(shown, 0, 0, f"cannot read: {e.strerror}"))
        return None, {}
    if len(data) > MAX_BYTES:
        problems.append(ConfigProblem(shown, 0, 0, f"is larger than {MAX_BYTES // 1024} KB; a devbox.yaml is a few "
                                                   "KB: is it the right file?"))
        return None, {}
    if b"\0" in data:
        problems.append(ConfigProblem(shown, 0, 0, "is a binary file, not YAML"))
        return None, {}
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        problems.append(ConfigProblem(shown, 0, 0, f"is not UTF-8 text (byte {e.start})"))
        return None, {}
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1
        column = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        problems.append(ConfigProblem(shown, line, column, f"YAML syntax: character {e.character!r} is not allowed"))
        return None, {}
    try:
        node = loader.get_single_node()
        if node is None:
            return None, {}
        sizes: dict[int, int] = {}
        if _expanded_size(node, sizes, set()) > MAX_VALUES:
            why = ("nested too deeply (an alias that contains itself?)" if CYCLE in sizes else
                   f"its aliases expand to more than {MAX_VALUES:,} values (an alias bomb?): write the values out")
            problems.append(ConfigProblem(shown, node.start_mark.line + 1, node.start_mark.column + 1, f"YAML: {why}"))
            return None, {}
        duplicate = _duplicate_key(node)
        if duplicate is not None:
            key, first, again = duplicate
            problems.append(ConfigProblem(shown, again.line + 1, again.column + 1,
                                          f"duplicate key '{key}' (first at line {first.line + 1}): keep one"))
            return None, {}
        value = loader.construct_document(node)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        what = e.problem or e.context or "invalid YAML"
        problems.append(ConfigProblem(shown, mark.line + 1 if mark else 0, mark.column + 1 if mark else 0,
                                      f"YAML syntax: {what}"))
        return None, {}
    except (yaml.YAMLError, RecursionError, ValueError, TypeError) as e:
        problems.append(ConfigProblem(shown, 0, 0, f"YAML: {str(e).splitlines()[0] if str(e) else type(e).__name__}"))
        return None, {}
    finally:
        loader.dispose()
    if _too_deep(value):
        line, column = node.start_mark.line + 1, node.start_mark.column + 1
        problems.append(ConfigProblem(shown, line, column, "YAML: nested too deeply (an alias that contains itself?)"))
        return None, {}
    positions = _walk(loader, node, shown)
    if misreads is not None:
        misreads.extend(_misread(loader, node, shown))
    return value, positions


MAX_BYTES = 1024 * 1024  # a config larger than this is not one (a 28 MB file took minutes and GBs)
MAX_VALUES = 10_000  # values after alias expansion: a devbox.yaml has a few hundred
CYCLE = -1  # the key `_expanded_size` marks an alias that contains itself with


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """How many values the document has once aliases are expanded, counted on the node graph (each
    node once, so a 436-byte alias bomb is counted, not built); a cycle counts as too many."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        sizes[CYCLE] = 1
        return MAX_VALUES + 1
    open_nodes.add(key)
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, sizes, open_nodes) + _expanded_size(v, sizes, open_nodes)
                       for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(item, sizes, open_nodes) for item in node.value)
    else:
        size = 1
    open_nodes.discard(key)
    sizes[key] = min(size, MAX_VALUES + 1)
    return sizes[key]


def _duplicate_key(node: yaml.Node, seen: set[int] | None = None) -> tuple[str, yaml.Mark, yaml.Mark] | None:
    """The first key written twice in one mapping (YAML 1.2 and Compose refuse those; PyYAML keeps the last)."""
    seen = set() if seen is None else seen
    if id(node) in seen:
        return None
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        keys: dict[str, yaml.Mark] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value != "<<":
                if key_node.value in keys:
                    return key_node.value, keys[key_node.value], key_node.start_mark
                keys[key_node.value] = key_node.start_mark
            found = _duplicate_key(value_node, seen)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            found = _duplicate_key(item, seen)
            if found:
                return found
    return None


BOOLEAN_KEYS = {"poll", "preload"}  # where yes/no/on/off may mean what YAML 1.1 reads


def _misread(loader: yaml.SafeLoader, node: yaml.Node, shown: str) -> list[tuple[tuple, ConfigProblem]]:
    """Plain scalars that YAML 1.1 reads as something other than what was written: `22:22` is the
    number 1342 (base 60), `0755` is 493 (octal), `on` and `yes` are true. Compose reads all of
    them as the strings they look like; devbox asks to quote them rather than guess."""
    out = []
    for path, item, _ in _nodes(loader, node):
        if not isinstance(item, yaml.ScalarNode) or item.style is not None:
            continue
        text, tag = item.value, item.tag.rsplit(":", 1)[-1]
        misread = (tag in ("int", "float") and ":" in text) or \
                  (tag == "int" and re.fullmatch(r"[-+]?0[0-9_]+", text) is not None) or \
                  (tag == "bool" and text.lower() not in ("true", "false") and not (path and path[-1] in BOOLEAN_KEYS))
        if misread:
            value = loader.construct_object(item)
            out.append((path, ConfigProblem(shown, item.start_mark.line + 1, item.start_mark.column + 1,
                                            f"{schema.dotted(path)}: {text} is read by YAML as {value!r}, "
                                            f"not as written: quote it (\"{text}\")")))
    return out


def _too_deep(value: Any, depth: int = 0) -> bool:
    """devbox.yaml is a few levels deep; far deeper means a recursive alias (`a: &x [*x]`)."""
    if depth > 20:
        return True
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return any(_too_deep(child, depth + 1) for child in children)


def _nodes(loader: yaml.SafeLoader, node: yaml.Node, path: tuple = (), key_node: yaml.Node | None = None,
           seen: frozenset = frozenset()):
    """Every node of the document with its key path (and the node of its key, in a mapping)."""
    yield path, node, key_node
    if id(node) in seen or len(path) > 50:  # aliases can make cycles
        return
    seen = seen | {id(node)}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            try:
                key = loader.construct_object(key_node, deep=True)
                hash(key)
            except Exception:
                continue
            yield from _nodes(loader, value_node, path + (key,), key_node, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _nodes(loader, item, path + (i,), None, seen)


def _walk(loader: yaml.SafeLoader, node: yaml.Node, shown: str) -> Positions:
    """Where each value (and each key, at path + ("<key>",)) sits in the file."""
    out: Positions = {}
    for path, item, key_node in _nodes(loader, node):
        out.setdefault(path, (shown, item.start_mark.line + 1, item.start_mark.column + 1))
        if key_node is not None:
            out.setdefault(path + ("<key>",), (shown, key_node.start_mark.line + 1, key_node.start_mark.column + 1))
    return out


