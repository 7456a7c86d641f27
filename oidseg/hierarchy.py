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

from oidseg.errors import InputError


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
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read class descriptions ({exc})") from exc
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


def load_hierarchy(hierarchy_json: str | Path, class_csv: str | Path) -> Hierarchy:
    """Build a :class:`Hierarchy` from the official JSON and description CSV."""
    hierarchy_json = Path(hierarchy_json)
    names = read_class_descriptions(class_csv)
    try:
        root = json.loads(hierarchy_json.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"{hierarchy_json}: cannot read hierarchy JSON ({exc})") from exc
    if not isinstance(root, dict) or "LabelName" not in root:
        raise InputError(f"{hierarchy_json}: root node has no 'LabelName'")

    parents: dict[str, list[str]] = {}
    children: dict[str, list[str]] = {}

    def walk(node: dict, parent: str | None) -> None:
        mid = node.get("LabelName")
        if not isinstance(mid, str):
            raise InputError(f"{hierarchy_json}: node without LabelName under {parent}")
        if parent is not None:
            if mid not in names:
                raise InputError(
                    f"{hierarchy_json}: unknown MID {mid} (not in {class_csv})"
                )
            plist = parents.setdefault(mid, [])
            if parent != root["LabelName"] and parent not in plist:
                plist.append(parent)
                kids = children.setdefault(parent, [])
                if mid not in kids:
                    kids.append(mid)
        for child in node.get("Subcategory", []) or []:
            walk(child, mid)

    walk(root, None)
    missing = [m for m in names if m not in parents]
    if missing:
        raise InputError(
            f"{class_csv}: {len(missing)} classes absent from {hierarchy_json}, "
            f"first {missing[0]}"
        )

    def up(mid: str) -> list[str]:
        out: list[str] = []
        for p in parents.get(mid, ()):
            for a in [p, *up(p)]:
                if a not in out:
                    out.append(a)
        return out

    ancestors = {m: tuple(up(m)) for m in names}
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
