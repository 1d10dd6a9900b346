"""The one reader of every input file (job, grid, search space, W&B sweep file, `--set` values).

Read as a careless or hostile user would write it, a file is refused before anything is built
from it, with the file, line and key of every problem at once, when it is:
- not a regular file (a directory, a FIFO, /dev/zero), or larger than MAX_FILE_BYTES;
- not UTF-8 (the byte offset and line of the first bad byte);
- not plain data: YAML aliases (ten lines of nested aliases expand to gigabytes), tags other
  than str, int, float, bool, null, sequences and mappings (dates, !!binary, !!set, python
  tags), a duplicate key (both lines), NaN or infinity, an integer of more than MAX_INT_DIGITS
  digits, or nesting deeper than MAX_DEPTH.
`3e-5` is read as a number (YAML 1.2), although plain PyYAML reads a string. Mapping keys are
names, kept as written (`1:` is the key '1').
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# A sweep or job file is a few kilobytes (the largest shipped one under 1 KB); 64 KiB (some 1,500 lines) is far
# above any real one, and pure-Python YAML reads it in well under a second.
MAX_FILE_BYTES = 64 << 10
MAX_INT_DIGITS = 100
MAX_DEPTH = 50


class ConfigError(ValueError):
    """A job configuration that cannot run. The message names the key, value and fix."""


class YamlLoader(yaml.SafeLoader):
    """Safe YAML that also reads `3e-5` as a number (YAML 1.2); PyYAML alone reads a string."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)

PLAIN_TAGS = {f"tag:yaml.org,2002:{t}": t for t in ("str", "int", "float", "bool", "null", "seq", "map")}
_SHOWN_TAGS = {"tag:yaml.org,2002:timestamp": "a date (quote it if you mean the text)",
               "tag:yaml.org,2002:binary": "!!binary", "tag:yaml.org,2002:set": "!!set",
               "tag:yaml.org,2002:omap": "!!omap", "tag:yaml.org,2002:pairs": "!!pairs"}


class _Strict(YamlLoader):
    """YamlLoader that records every departure from plain data instead of building it."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.problems: list[tuple[int, str]] = []
        self.path: list[str] = []
        self.aliases = 0

    def _problem(self, node: yaml.Node, message: str) -> None:
        where = ".".join(self.path)
        self.problems.append((node.start_mark.line + 1, f"{where}: {message}" if where else message))

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.get_event()
            self.aliases += 1
            if self.aliases == 1:  # said once: a bomb has thousands
                self.problems.append((event.start_mark.line + 1, f"YAML aliases (*{event.anchor}) are not allowed; "
                                                                 "write the values out"))
            return yaml.ScalarNode("tag:yaml.org,2002:null", "", event.start_mark, event.end_mark)
        self.depth = getattr(self, "depth", 0) + 1
        try:
            if self.depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.MarkedYAMLError(problem=f"nested more than {MAX_DEPTH} levels deep", problem_mark=mark)
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        if node.tag not in PLAIN_TAGS:
            shown = _SHOWN_TAGS.get(node.tag, f"the tag {node.tag.replace('tag:yaml.org,2002:', '!!')}")
            self._problem(node, f"{shown} is not plain data; expected a string, number, true/false, null, "
                                "list or mapping")
            return None
        return super().construct_object(node, deep=deep)

    def construct_yaml_int(self, node: yaml.Node) -> Any:
        digits = sum(c.isdigit() for c in str(node.value))
        if digits > MAX_INT_DIGITS:
            self._problem(node, f"an integer of {digits} digits is not allowed; expected at most {MAX_INT_DIGITS}")
            return None
        return super().construct_yaml_int(node)

    def construct_yaml_float(self, node: yaml.Node) -> Any:
        value = super().construct_yaml_float(node)
        if value != value or value in (float("inf"), float("-inf")):
            self._problem(node, f"{node.value} is not a finite number; NaN and infinity are not allowed")
            return None
        return value

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> Any:
        seen: dict[Any, int] = {}
        if isinstance(node, yaml.MappingNode):
            for key_node, _ in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                if key is None:
                    continue
                line = key_node.start_mark.line + 1
                if key in seen:
                    where = ".".join((*self.path, str(key)))
                    self.problems.append((line, f"{where}: duplicate key (first at line {seen[key]}, again at "
                                                f"line {line}); keep one"))
                else:
                    seen[key] = line
        self.flatten_mapping(node)
        mapping: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            # A key is a name, kept as written: `0E0:` or `1:` is the text, not a number read from it.
            plain = isinstance(key_node, yaml.ScalarNode) and key_node.tag in PLAIN_TAGS
            key = key_node.value if plain else self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                self._problem(key_node, f"a {type(key).__name__} as a mapping key is not allowed; expected a name")
                continue
            self.path.append(str(key))
            try:
                mapping[key] = self.construct_object(value_node, deep=True)
            finally:
                self.path.pop()
        return mapping

    def construct_sequence(self, node: yaml.Node, deep: bool = False) -> Any:
        out = []
        for i, child in enumerate(node.value):
            self.path.append(str(i))
            try:
                out.append(self.construct_object(child, deep=True))
            finally:
                self.path.pop()
        return out


_Strict.add_constructor("tag:yaml.org,2002:int", _Strict.construct_yaml_int)
_Strict.add_constructor("tag:yaml.org,2002:float", _Strict.construct_yaml_float)
_Strict.add_constructor("tag:yaml.org,2002:map", lambda loader, node: loader.construct_mapping(node, deep=True))
_Strict.add_constructor("tag:yaml.org,2002:seq", lambda loader, node: loader.construct_sequence(node, deep=True))


@dataclass(frozen=True)
class Document:
    """A file's plain data, and the line of every key and list item by its path from the root."""

    path: Path
    data: Any
    lines: dict[tuple[str, ...], int] = field(default_factory=dict)

    def line(self, where: tuple[str, ...]) -> int | None:
        """The line of `where`, or of its nearest located parent."""
        for end in range(len(where), 0, -1):
            if where[:end] in self.lines:
                return self.lines[where[:end]]
        return None


def _lines(root: yaml.Node | None) -> dict[tuple[str, ...], int]:
    found: dict[tuple[str, ...], int] = {}
    stack: list[tuple[yaml.Node, tuple[str, ...]]] = [(root, ())] if root is not None else []
    while stack:
        node, path = stack.pop()
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = (*path, str(key.value))
                found.setdefault(child, key.start_mark.line + 1)
                stack.append((value, child))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                found[(*path, str(i))] = item.start_mark.line + 1
                stack.append((item, (*path, str(i))))
    return found


def _not_utf8(source: str, data: bytes, exc: UnicodeDecodeError) -> ConfigError:
    line = data.count(b"\n", 0, exc.start) + 1
    bad = data[exc.start:exc.start + 4].hex(" ")
    return ConfigError(f"{source}: line {line}: byte {exc.start} (0x{bad.split(' ')[0]}) is not UTF-8; save the file as "
                       "UTF-8 (sweep files are UTF-8 text)")


def read_text(path: Path) -> str:
    """A regular file's UTF-8 text, at most MAX_FILE_BYTES; ConfigError (naming the file) if not."""
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer for ever.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = ("a directory" if stat.S_ISDIR(info.st_mode) else "a FIFO" if stat.S_ISFIFO(info.st_mode)
                    else "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else "a socket")
            raise ConfigError(f"{path}: is {kind}; expected a regular file (YAML or JSON)")
        if info.st_size > MAX_FILE_BYTES:
            raise ConfigError(f"{path}: {info.st_size:,} bytes is too large; expected a sweep or job file of at most "
                              f"{MAX_FILE_BYTES:,} bytes")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_FILE_BYTES:,} bytes; expected a sweep or job file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _not_utf8(str(path), data, exc) from None


def parse(text: str, source: str) -> tuple[Any, dict[tuple[str, ...], int]]:
    """Plain data from YAML (or JSON) text, and the line of every key; ConfigError listing every
    problem (each with its line) if the text is not plain data."""
    try:
        loader = _Strict(text)
    except yaml.reader.ReaderError as exc:  # a control character such as NUL, checked as the text is taken
        at = text.count("\n", 0, exc.position) + 1
        raise ConfigError(f"{source}: line {at}: not valid YAML: character U+{int(exc.character):04X} is not allowed "
                          f"(character {exc.position}); expected printable text") from None
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}:" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}:{line} not valid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply; expected at most {MAX_DEPTH} levels") from None
    finally:
        loader.dispose()
    if loader.problems:
        problems = sorted(dict.fromkeys(loader.problems), key=lambda item: item[0])
        if len(problems) == 1:
            number, message = problems[0]
            raise ConfigError(f"{source}: line {number}: {message}")
        body = "\n".join(f"  line {n}: {m}" for n, m in problems)
        raise ConfigError(f"{source}: {len(problems)} problems:\n{body}")
    return data, _lines(root)


def read(path: Path) -> Document:
    """Read and parse `path` once: every input file goes through here."""
    data, lines = parse(read_text(path), str(path))
    return Document(path=path, data=data, lines=lines)


def value(text: str, source: str) -> Any:
    """A `--set key=value` value, as plain data (the same rules as a file)."""
    data, _ = parse(text, source)
    return data
