"""Checks of the workflow configuration that JSON schema alone cannot make
well, run by rules/common.smk when the workflow is read (so a bad setting
stops `snakemake`, `--dry-run` included, before any job):

- :func:`unknown_keys` walks the config beside the schema and names every key
  the schema does not know, with the closest known key (``inference.max_per_imgs``:
  did you mean ``max_per_img``?), and every key that is not a string where the
  schema wants names (``max_per_img_overrides: {3: 200}``);
- :func:`semantic_problems` checks what relates settings to each other or to
  files: ensemble members are models with the ensemble's class set, each
  training stage's list matches its model's class set, every local file named
  (model config, checkpoint, released weights, pretrained weights) exists,
  max_per_img overrides name existing test shards.

Both return lists of one-line messages naming the key (and the path); the
caller raises them together. Pure functions of plain data: no Snakemake import.
"""

from __future__ import annotations

import difflib
import os
import re
from typing import Any, Iterable

#: the list kinds a model of each class set trains on (SPEC section 4)
LIST_KINDS = {"leaf": ("leaf", "leaf_oversampled"), "parent": ("parent",)}
#: each ensemble's class set (the post-processing expands "leaf", merges with "parent")
ENSEMBLE_CLASSES = {"leaf": "leaf", "parent": "parent"}


class ConfigError(ValueError):
    """One or more configuration problems, one per line."""


def _resolve(schema: dict, root: dict) -> dict:
    while isinstance(schema, dict) and "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            return {}
        node: Any = root
        for part in ref[2:].split("/"):
            node = node[part]
        schema = node
    return schema if isinstance(schema, dict) else {}


def _suggest(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown_keys(config: Any, schema: dict, root: dict | None = None, where: str = "") -> list[str]:
    """Messages for keys the (closed) schema objects do not allow."""
    root = root if root is not None else schema
    schema = _resolve(schema, root)
    problems: list[str] = []
    if isinstance(config, list):
        items = _resolve(schema.get("items", {}), root)
        for i, item in enumerate(config):
            problems += unknown_keys(item, items, root, f"{where}[{i}]")
        return problems
    if not isinstance(config, dict):
        return problems
    props = schema.get("properties", {})
    patterns = schema.get("patternProperties", {})
    extra = schema.get("additionalProperties", True)
    for key, value in config.items():
        name = f"{where}.{key}" if where else str(key)
        if not isinstance(key, str):
            hint = " (quote it)" if patterns else ""
            problems.append(f"{name}: key {key!r} is not a string{hint}")
            continue
        if key in props:
            problems += unknown_keys(value, props[key], root, name)
            continue
        matched = [p for p in patterns if re.search(p, key)]
        if matched:
            problems += unknown_keys(value, patterns[matched[0]], root, name)
        elif extra is False:
            known = sorted(props) or [f"/{p}/" for p in patterns]
            problems.append(f"{name}: unknown key{_suggest(key, props)} (known here: {', '.join(known)})")
        elif isinstance(extra, dict):
            problems += unknown_keys(value, extra, root, name)
    return problems


def _is_local_path(value: str) -> bool:
    """A file path, not a model-zoo name or URL (open-mmlab://, torchvision://, https://)."""
    return "://" not in value


def _missing(path: str, base: str) -> bool:
    return not os.path.isfile(os.path.join(base, path))


def semantic_problems(config: dict, basedir: str, workdir: str = ".") -> list[str]:
    """Messages for settings that contradict each other or name missing files.
    Model configs are relative to ``basedir`` (the checkout); weights files
    to ``workdir`` (where Snakemake runs), as the rules read them."""
    problems: list[str] = []
    models = config.get("models", {})
    for name, spec in models.items():
        key = f"models.{name}"
        if _missing(spec["config"], basedir):
            problems.append(f"{key}.config: {spec['config']} does not exist (relative to {basedir})")
        if spec.get("checkpoint") and spec.get("released"):
            problems.append(f"{key}: set either 'checkpoint' (our own weights) or 'released' "
                            "(an original 2019 file), not both")
        for field in ("checkpoint", "released", "pretrained"):
            value = spec.get(field)
            if value and _is_local_path(value) and _missing(value, workdir):
                what = "is a directory, not a file" if os.path.isdir(os.path.join(workdir, value)) else "does not exist"
                problems.append(f"{key}.{field}: {value} {what}")
        allowed = LIST_KINDS[spec["classes"]]
        for i, stage in enumerate(spec["stages"]):
            if stage["list"] not in allowed:
                problems.append(
                    f"{key}.stages[{i}].list: {stage['list']!r} is a list of "
                    f"{'parent' if stage['list'] == 'parent' else 'leaf'} images; a {spec['classes']} model "
                    f"trains on {' or '.join(repr(a) for a in allowed)}")
    for ensemble, members in config["inference"]["ensembles"].items():
        for member in members:
            key = f"inference.ensembles.{ensemble}"
            if member not in models:
                problems.append(f"{key}: {member!r} is not a model{_suggest(member, models)} "
                                f"(models: {', '.join(models)})")
            elif models[member]["classes"] != ENSEMBLE_CLASSES.get(ensemble, models[member]["classes"]):
                problems.append(f"{key}: {member} is a {models[member]['classes']} model; the {ensemble} "
                                f"ensemble needs {ENSEMBLE_CLASSES[ensemble]} models")
    n_shards = config["annotations"]["n_shards"]
    for shard in config["inference"].get("max_per_img_overrides") or {}:
        if isinstance(shard, str) and re.fullmatch(r"\d\d", shard) and int(shard) >= n_shards:
            problems.append(f"inference.max_per_img_overrides: shard {shard!r} does not exist "
                            f"(annotations.n_shards is {n_shards}: 00..{n_shards - 1:02d})")
    return problems
