"""Hierarchy derivation: leaf/parent/grandparent lists, ancestors, descendants."""

from __future__ import annotations

import json

import pytest

from oidseg.demo import ROOT_MID, class_descriptions, hierarchy_json
from oidseg.errors import InputError
from oidseg.hierarchy import load_hierarchy

RECT, DIAMOND, TRIANGLE, HEXAGON = "/m/0c7rjy", "/m/01v2tq", "/m/04m1pz", "/m/0gk5xm"
ELLIPSE, RING, HALFDISC, STAR = "/m/0bt7nd", "/m/02j8vc", "/m/06zr4q", "/m/0k2hsf"
CROSS, LSHAPE = "/m/03ytpc", "/m/05nb8w"
POLYGON, CURVED, QUAD, ROUND, SYMBOL = "/m/0dq7kz", "/m/07q4vm", "/m/0fz9xh", "/m/09k3rw", "/m/0h8kn2"


def write(tmp_path, tree: dict, classes: list[tuple[str, str]]):
    h = tmp_path / "hierarchy.json"
    c = tmp_path / "classes.csv"
    h.write_text(json.dumps(tree))
    c.write_text("".join(f"{m},{n}\n" for m, n in classes))
    return h, c


@pytest.fixture()
def demo(tmp_path):
    return load_hierarchy(*write(tmp_path, hierarchy_json(), class_descriptions()))


def test_demo_class_lists(demo):
    assert ROOT_MID not in demo.classes
    assert set(demo.leaf_classes) == {RECT, DIAMOND, TRIANGLE, HEXAGON, ELLIPSE, RING,
                                      HALFDISC, STAR, CROSS, LSHAPE}
    assert set(demo.parent_classes) == {QUAD, ROUND, SYMBOL}
    assert set(demo.grandparent_classes) == {POLYGON, CURVED}
    assert set(demo.expanded_parent_classes) == {QUAD, ROUND, SYMBOL, POLYGON, CURVED}
    # class order = class-description CSV order
    assert list(demo.classes) == [m for m, _ in class_descriptions()]
    assert demo.leaf_classes == [m for m in demo.classes if m in set(demo.leaf_classes)]


def test_two_parent_class(demo):
    assert set(demo.parents[DIAMOND]) == {QUAD, SYMBOL}
    assert set(demo.ancestors[DIAMOND]) == {QUAD, POLYGON, SYMBOL}
    assert len(demo.ancestors[DIAMOND]) == 3  # no duplicates


def test_depth_two_and_top_level(demo):
    assert set(demo.ancestors[RECT]) == {QUAD, POLYGON}
    assert set(demo.ancestors[RING]) == {ROUND, CURVED}
    assert demo.ancestors[TRIANGLE] == (POLYGON,)
    assert demo.ancestors[HALFDISC] == (CURVED,)
    assert demo.ancestors[CROSS] == () and demo.ancestors[LSHAPE] == ()
    assert demo.ancestors[POLYGON] == ()
    assert demo.ancestors[QUAD] == (POLYGON,)


def test_descendants(demo):
    assert set(demo.descendants[POLYGON]) == {QUAD, RECT, DIAMOND, TRIANGLE, HEXAGON}
    assert set(demo.descendants[SYMBOL]) == {DIAMOND, STAR}
    assert set(demo.descendants[CURVED]) == {ROUND, ELLIPSE, RING, HALFDISC}
    assert demo.descendants[STAR] == ()
    for cls, ancestors in demo.ancestors.items():  # the two maps agree
        for a in ancestors:
            assert cls in demo.descendants[a]


def test_to_json_round_trip(demo):
    data = json.loads(json.dumps(demo.to_json()))
    assert data["leaf_classes"] == demo.leaf_classes
    assert set(data["ancestors"][DIAMOND]) == {QUAD, POLYGON, SYMBOL}


def test_small_handmade_tree(tmp_path):
    # Carnivore > Bear > Teddy bear; Toy > Teddy bear; Carnivore > Cat; Bird (top-level leaf)
    tree = {"LabelName": ROOT_MID, "Subcategory": [
        {"LabelName": "/m/01lrl", "Subcategory": [
            {"LabelName": "/m/01dws", "Subcategory": [{"LabelName": "/m/0kmg4"}]},
            {"LabelName": "/m/01yrx"}]},
        {"LabelName": "/m/0138tl", "Subcategory": [{"LabelName": "/m/0kmg4"}]},
        {"LabelName": "/m/015p6"}]}
    classes = [("/m/01lrl", "Carnivore"), ("/m/01dws", "Bear"), ("/m/0kmg4", "Teddy bear"),
               ("/m/01yrx", "Cat"), ("/m/0138tl", "Toy"), ("/m/015p6", "Bird")]
    h = load_hierarchy(*write(tmp_path, tree, classes))
    assert h.leaf_classes == ["/m/0kmg4", "/m/01yrx", "/m/015p6"]
    assert h.grandparent_classes == ["/m/01lrl"]
    assert h.parent_classes == ["/m/01dws", "/m/0138tl"]
    assert set(h.ancestors["/m/0kmg4"]) == {"/m/01dws", "/m/01lrl", "/m/0138tl"}
    assert set(h.descendants["/m/01lrl"]) == {"/m/01dws", "/m/0kmg4", "/m/01yrx"}


def test_unknown_mid_in_hierarchy(tmp_path):
    tree = {"LabelName": ROOT_MID, "Subcategory": [{"LabelName": "/m/0zzz"}]}
    with pytest.raises(InputError, match="/m/0zzz"):
        load_hierarchy(*write(tmp_path, tree, [("/m/0aaa", "A")]))


# --------------------------------------------------------------------------- bad input (issue 13)

CYCLE_CLASSES = [("/m/0a", "A"), ("/m/0b", "B"), ("/m/0c", "C"), ("/m/0d", "D")]


def test_cycle_is_a_clear_error(tmp_path):
    # A > B > C and, elsewhere, C > A: a cycle A -> B -> C -> A (RecursionError before)
    tree = {"LabelName": ROOT_MID, "Subcategory": [
        {"LabelName": "/m/0a", "Subcategory": [
            {"LabelName": "/m/0b", "Subcategory": [{"LabelName": "/m/0c"}]}]},
        {"LabelName": "/m/0c", "Subcategory": [{"LabelName": "/m/0a"}]},
        {"LabelName": "/m/0d"}]}
    h, c = write(tmp_path, tree, CYCLE_CLASSES)
    with pytest.raises(InputError, match=r"hierarchy.json: the hierarchy has a cycle") as err:
        load_hierarchy(h, c)
    message = str(err.value)
    chain = message.split("cycle: ")[1].split(" (")[0].split(" -> ")
    assert chain[0] == chain[-1] and set(chain) == {"/m/0a", "/m/0b", "/m/0c"}, message


def test_self_loop_is_a_cycle(tmp_path):
    tree = {"LabelName": ROOT_MID, "Subcategory": [
        {"LabelName": "/m/0a", "Subcategory": [{"LabelName": "/m/0a"}]},
        {"LabelName": "/m/0b"}, {"LabelName": "/m/0c"}, {"LabelName": "/m/0d"}]}
    with pytest.raises(InputError, match=r"cycle: /m/0a -> /m/0a"):
        load_hierarchy(*write(tmp_path, tree, CYCLE_CLASSES))


def test_deeply_nested_json_is_a_clear_error(tmp_path):
    # 3,000 levels: json's own nesting limit (RecursionError before) -> InputError
    depth = 3000
    mids = [f"/m/0x{k}" for k in range(depth)]
    h, c = tmp_path / "h.json", tmp_path / "c.csv"
    text = "".join(f'{{"LabelName": "{m}", "Subcategory": [' for m in [ROOT_MID, *mids])
    h.write_text(text + "]}" * (depth + 1))
    c.write_text("".join(f"{m},N{m}\n" for m in mids))
    with pytest.raises(InputError, match=r"h.json: hierarchy JSON is nested too deeply"):
        load_hierarchy(h, c)


def test_long_chain_ancestors(tmp_path):
    # 400 levels (below json's limit): walked and expanded without recursion
    depth = 400
    mids = [f"/m/0x{k}" for k in range(depth)]
    h, c = tmp_path / "h.json", tmp_path / "c.csv"
    text = "".join(f'{{"LabelName": "{m}", "Subcategory": [' for m in [ROOT_MID, *mids])
    h.write_text(text + "]}" * (depth + 1))
    c.write_text("".join(f"{m},N{m}\n" for m in mids))
    hier = load_hierarchy(h, c)
    assert hier.ancestors[mids[-1]] == tuple(reversed(mids[:-1]))
    assert hier.leaf_classes == [mids[-1]]


@pytest.mark.parametrize("which", ["classes", "hierarchy"])
def test_non_utf8_bytes_name_file_and_offset(tmp_path, which):
    tree = {"LabelName": ROOT_MID, "Subcategory": [{"LabelName": "/m/0a", "DisplayName": "x"}]}
    h, c = write(tmp_path, tree, [("/m/0a", "Caf\u00e9")])
    path = c if which == "classes" else h
    data = path.read_bytes()
    offset = data.index(b"/m/0a") + 5  # right after the MID
    path.write_bytes(data[:offset] + b"\xe9" + data[offset:])  # latin-1 'é': not UTF-8
    with pytest.raises(InputError) as err:
        load_hierarchy(h, c)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and "not UTF-8" in message
    assert f"byte offset {offset}" in message and "0xe9" in message


def test_subcategory_of_wrong_type(tmp_path):
    tree = {"LabelName": ROOT_MID, "Subcategory": [{"LabelName": "/m/0a", "Subcategory": "x"}]}
    with pytest.raises(InputError, match="'Subcategory' of /m/0a is not a list"):
        load_hierarchy(*write(tmp_path, tree, [("/m/0a", "A")]))
    tree = {"LabelName": ROOT_MID, "Subcategory": ["/m/0a"]}
    with pytest.raises(InputError, match="is not an object"):
        load_hierarchy(*write(tmp_path, tree, [("/m/0a", "A")]))
