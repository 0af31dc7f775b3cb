import pytest

from invgen.errors import InvgenConfigError
from invgen.registry import Registry, split_spec


def test_split_spec_splits_at_the_first_colon_only():
    assert split_spec("oracle:color:ten") == ("oracle", "color:ten")
    assert split_spec(" saliency ") == ("saliency", "")
    assert split_spec("clip:C:/models/x") == ("clip", "C:/models/x")


def test_a_registry_resolves_a_spec_and_names_what_it_knows_when_it_cannot():
    things = Registry("widget")
    things.register("plain", lambda arg, scale=1: ("plain", arg, scale))
    things.register("path", lambda arg: ("path", arg), arg="PATH")
    things.register("level", lambda arg: ("level", arg or "0.5"), arg="LEVEL", arg_required=False)

    assert things.resolve("plain", scale=3) == ("plain", "", 3)
    assert things.resolve("path:/a/b:c") == ("path", "/a/b:c")
    assert things.resolve("level") == ("level", "0.5")
    with pytest.raises(InvgenConfigError, match=r"unknown widget 'nope' \(use level\[:LEVEL\], path:PATH or plain\)"):
        things.resolve("nope")
    with pytest.raises(InvgenConfigError, match="the widget 'path' needs its argument: path:PATH"):
        things.resolve("path")
    with pytest.raises(ValueError):
        things.register("a:b", lambda arg: None)


def test_a_third_party_plug_in_registers_through_its_entry_point(monkeypatch):
    import importlib.metadata

    import invgen.registry as registry

    things = Registry("thing")

    class EntryPoint:
        def load(self):
            things.register("theirs", lambda arg: f"theirs({arg})", arg="X")

    monkeypatch.setattr(registry, "_plugins_loaded", False)
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group: [EntryPoint()] if group == registry.ENTRY_POINT_GROUP else [])
    assert things.resolve("theirs:1") == "theirs(1)" and things.names() == ["theirs"]


def test_a_broken_plug_in_is_left_out_with_a_warning(monkeypatch):
    import importlib.metadata

    import invgen.registry as registry

    class Broken:
        name = "broken"

        def load(self):
            raise ImportError("no module named 'their_dependency'")

    monkeypatch.setattr(registry, "_plugins_loaded", False)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [Broken()])
    things = Registry("thing")
    things.register("ours", lambda arg: "ours")
    with pytest.warns(UserWarning, match="plug-in 'broken' could not be loaded.*their_dependency"):
        assert things.resolve("ours") == "ours"
