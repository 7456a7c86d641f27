"""Class hierarchy of the Open Images segmentation challenge (SPEC section 1).

Everything here is derived from two files: the hierarchy JSON and the
class-description CSV. Nothing is hard-coded, so the embedded demo (with its
own miniature hierarchy) and the real 300-class hierarchy go through the same
code.

Definitions:
- leaf classes: classes without children;
- grandparents: classes with at least one non-leaf child (Carnivore and
  Reptile in the real hierarchy);
- parent classes: classes with children, minus the grandparents;
- ancestors of a class: every node above it, the root excluded;
- class order inside a model: the order of the class-description CSV
  (documented in the README).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from oidseg.errors import InputError, read_utf8_text


@dataclass(frozen=True)
class Hierarchy:
    """Class lists and ancestor/descendant maps of one hierarchy."""

    #: every class MID in class-description order
    classes: tuple[str, ...]
    #: MID -> display name
    names: dict[str, str]
    #: MID -> direct parents (a node may have several)
    parents: dict[str, tuple[str, ...]]
    #: MID -> direct children
    children: dict[str, tuple[str, ...]]
    ancestors: dict[str, tuple[str, ...]] = field(default_factory=dict)
    descendants: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def leaf_classes(self) -> list[str]:
        return [c for c in self.classes if not self.children.get(c)]

    @property
    def grandparent_classes(self) -> list[str]:
        return [
            c
            for c in self.classes
            if any(self.children.get(k) for k in self.children.get(c, ()))
        ]

    @property
    def parent_classes(self) -> list[str]:
        grand = set(self.grandparent_classes)
        return [c for c in self.classes if self.children.get(c) and c not in grand]

    @property
    def expanded_parent_classes(self) -> list[str]:
        """The 25 parent and grandparent classes (23 + 2 in the real data)."""
        keep = set(self.parent_classes) | set(self.grandparent_classes)
        return [c for c in self.classes if c in keep]

    def to_json(self) -> dict:
        return {
            "classes": list(self.classes),
            "names": self.names,
            "leaf_classes": self.leaf_classes,
            "parent_classes": self.parent_classes,
            "grandparent_classes": self.grandparent_classes,
            "expanded_parent_classes": self.expanded_parent_classes,
            "ancestors": {k: list(v) for k, v in self.ancestors.items()},
            "descendants": {k: list(v) for k, v in self.descendants.items()},
        }


def read_class_descriptions(path: str | Path) -> dict[str, str]:
    """Read the header-less `MID,DisplayName` CSV, keeping file order."""
    path = Path(path)
    names: dict[str, str] = {}
    text = read_utf8_text(path, "class descriptions")
    if not text.strip():
        raise InputError(f"{path}: file is empty")
    for lineno, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row:
            continue
        if len(row) != 2 or not row[0].startswith("/m/"):
            raise InputError(
                f"{path}: row {lineno}: expected 'MID,DisplayName' without header, got {row!r}"
            )
        if row[0] in names:
            raise InputError(f"{path}: row {lineno}: duplicate MID {row[0]}")
        names[row[0]] = row[1]
    return names


def _read_tree(hierarchy_json: Path, class_csv: Path, names: dict[str, str]
               ) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Parents and children of every MID of the JSON tree (the root left out)."""
    text = read_utf8_text(hierarchy_json, "hierarchy JSON")
    try:
        root = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{hierarchy_json}: cannot read hierarchy JSON ({exc})") from exc
    except RecursionError:
        raise InputError(f"{hierarchy_json}: hierarchy JSON is nested too deeply") from None
    if not isinstance(root, dict) or not isinstance(root.get("LabelName"), str):
        raise InputError(f"{hierarchy_json}: root node has no 'LabelName'")
    root_mid = root["LabelName"]
    parents: dict[str, list[str]] = {}
    children: dict[str, list[str]] = {}
    # depth-first, children in file order (an explicit stack: no recursion limit)
    stack: list[tuple[object, str | None]] = [(root, None)]
    while stack:
        node, parent = stack.pop()
        if not isinstance(node, dict):
            raise InputError(f"{hierarchy_json}: a node under {parent} is not an object")
        mid = node.get("LabelName")
        if not isinstance(mid, str):
            raise InputError(f"{hierarchy_json}: node without LabelName under {parent}")
        if parent is not None:
            if mid not in names:
                raise InputError(
                    f"{hierarchy_json}: unknown MID {mid} (not in {class_csv})"
                )
            plist = parents.setdefault(mid, [])
            if parent != root_mid and parent not in plist:
                plist.append(parent)
                kids = children.setdefault(parent, [])
                if mid not in kids:
                    kids.append(mid)
        subs = node.get("Subcategory", []) or []
        if not isinstance(subs, list):
            raise InputError(f"{hierarchy_json}: 'Subcategory' of {mid} is not a list")
        stack.extend((child, mid) for child in reversed(subs))
    return parents, children


def _parents_first(parents: dict[str, list[str]], mids: list[str], source: Path) -> list[str]:
    """Every MID after all of its parents; a cycle raises :class:`InputError`
    naming its MIDs."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    order: list[str] = []
    for start in mids:
        if state.get(start):
            continue
        path = [start]
        todo = [iter(parents.get(start, ()))]
        state[start] = 1
        while todo:
            nxt = next(todo[-1], None)
            if nxt is None:
                todo.pop()
                done = path.pop()
                state[done] = 2
                order.append(done)
            elif state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                raise InputError(
                    f"{source}: the hierarchy has a cycle: "
                    + " -> ".join(cycle[::-1])
                    + " (each MID a subcategory of the one before)"
                )
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                todo.append(iter(parents.get(nxt, ())))
    return order


def load_hierarchy(hierarchy_json: str | Path, class_csv: str | Path) -> Hierarchy:
    """Build a :class:`Hierarchy` from the official JSON and description CSV."""
    hierarchy_json, class_csv = Path(hierarchy_json), Path(class_csv)
    names = read_class_descriptions(class_csv)
    parents, children = _read_tree(hierarchy_json, class_csv, names)
    missing = [m for m in names if m not in parents]
    if missing:
        raise InputError(
            f"{class_csv}: {len(missing)} classes absent from {hierarchy_json}, "
            f"first {missing[0]}"
        )
    # ancestors: each parent, then its ancestors, depth first, without repeats
    ancestors: dict[str, tuple[str, ...]] = {}
    for mid in _parents_first(parents, list(names), hierarchy_json):
        out: dict[str, None] = {}
        for p in parents.get(mid, ()):
            out[p] = None
            out.update(dict.fromkeys(ancestors[p]))
        ancestors[mid] = tuple(out)
    ancestors = {m: ancestors[m] for m in names}
    descendants: dict[str, list[str]] = {m: [] for m in names}
    for m in names:
        for a in ancestors[m]:
            descendants[a].append(m)
    order = {m: i for i, m in enumerate(names)}
    return Hierarchy(
        classes=tuple(names),
        names=dict(names),
        parents={m: tuple(parents.get(m, ())) for m in names},
        children={m: tuple(sorted(children.get(m, ()), key=order.get)) for m in names},
        ancestors=ancestors,
        descendants={m: tuple(sorted(v, key=order.get)) for m, v in descendants.items()},
    )
