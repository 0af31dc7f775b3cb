"""Prompt suites of `invgen audit`: the built-in data, a user's own file, and one sentence per mistake."""

import json
from pathlib import Path

import pytest
import yaml

from invgen.audit.suites import Attribute, Suite, builtin_suites, load_suite
from invgen.benchmarks.digits.data import PALETTES, build_splits, digit_prompts
from invgen.errors import InvgenConfigError
from invgen.metrics.classifiers import load_classifier

FAIRFACE_RACE4 = ["White", "Black", "Asian", "Indian"]
FAIRFACE_RACE7 = ["White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian", "Middle Eastern"]


def test_builtin_names():
    assert builtin_suites() == ["digits", "occupations", "occupations-test", "occupations-train"]


def test_occupations_split_is_fixed_and_partitions():
    full, train, test = load_suite("occupations"), load_suite("occupations-train"), load_suite("occupations-test")
    assert len(full.subjects) == len(set(full.subjects)) == 190
    assert (len(train.subjects), len(test.subjects)) == (152, 38)
    assert set(train.subjects) | set(test.subjects) == set(full.subjects)
    assert not set(train.subjects) & set(test.subjects)
    # The documented rule behind the stored lists: every fifth occupation in alphabetical order is held out.
    assert full.subjects == sorted(full.subjects, key=str.lower)
    assert test.subjects == full.subjects[4::5]
    for name in ("nurse", "umpire", "zoologist", "administrative assistant", "judge", "soldier"):
        assert name in test.subjects
    for name in ("doctor", "software developer", "firefighter", "CEO", "accountant", "teacher"):
        assert name in train.subjects
    # A split keeps the suite's order and pairs each prompt with its subject.
    assert train.subjects == [s for s in full.subjects if s in set(train.subjects)]
    assert train.prompts == [full.prompts[full.subjects.index(s)] for s in train.subjects]
    assert (full.name, train.name, test.name) == ("occupations", "occupations-train", "occupations-test")
    assert train.attributes == full.attributes and Path(full.source).name == "occupations.yaml"


def test_occupation_template_and_article():
    suite = load_suite("occupations")
    prompt = dict(zip(suite.subjects, suite.prompts, strict=True))
    assert prompt["doctor"] == "a photo of the face of a doctor, a person"
    assert prompt["accountant"] == "a photo of the face of an accountant, a person"
    assert prompt["umpire"] == "a photo of the face of an umpire, a person"
    assert prompt["software developer"] == "a photo of the face of a software developer, a person"
    assert prompt["CEO"] == "a photo of the face of a CEO, a person"
    assert sum(p.startswith("a photo of the face of an ") for p in suite.prompts) == sum(
        s[0].lower() in "aeiou" for s in suite.subjects
    )


def test_face_attributes():
    suite = load_suite("occupations-test")
    assert list(suite.attributes) == ["gender", "race", "race7", "age"]
    assert suite.attribute("race").values == FAIRFACE_RACE4
    assert suite.attribute("race7").values == FAIRFACE_RACE7
    assert suite.attribute("gender").values == ["male", "female"]
    assert suite.attribute("age").values == ["young", "old"]
    for name, attribute in suite.attributes.items():
        assert isinstance(attribute, Attribute) and attribute.name == name
        assert attribute.faces is True and attribute.classifier is None
        assert list(attribute.prompts) == attribute.values
        assert all(len(p) >= 1 and all(t.strip() for t in p) for p in attribute.prompts.values())
    # No two values share a prompt: CLIP could not tell them apart.
    for attribute in suite.attributes.values():
        texts = [t for p in attribute.prompts.values() for t in p]
        assert len(texts) == len(set(texts)), attribute.name
    assert [a.name for a in suite.joint(["gender", "race"])] == ["gender", "race"]
    assert [a.name for a in suite.joint("gender+race7")] == ["gender", "race7"]


def test_digits_suite_matches_the_benchmark():
    suite = load_suite("digits")
    assert suite.prompts == digit_prompts()
    # ... and is exactly what the digits builder writes into its metadata.
    written = {record.prompt for record in build_splits(size=8)["test"].records}
    assert set(suite.prompts) == written
    assert suite.subjects == [str(d) for d in range(10)]
    color = suite.attribute("color")
    assert color.values == [name for name, _ in PALETTES["two"]]
    assert color.faces is False and color.classifier == "oracle:color"
    assert load_classifier(color.classifier, attribute="color").names == color.values
    assert list(color.prompts) == color.values


USER = {
    "name": "jobs",
    "template": "a portrait of {article} {subject}",
    "subjects": ["doctor", "engineer", "hour worker", "nurse"],
    "articles": {"hour worker": "an"},
    "splits": {"train": ["doctor", "hour worker"], "test": ["nurse", "engineer"]},
    "attributes": {
        "gender": {
            "values": ["male", "female"],
            "prompts": {"male": ["a photo of a man"], "female": "a photo of a woman"},
        },
        "hat": {
            "values": ["hat", "no_hat"],
            "prompts": {"hat": ["a person wearing a hat"], "no_hat": ["a bareheaded person"]},
            "faces": False,
            "classifier": "checkpoint:hats",
        },
    },
}


def test_user_suite_round_trip(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("jobs.yaml").write_text(yaml.safe_dump(USER, sort_keys=False), encoding="utf-8")
    suite = load_suite("jobs.yaml")
    assert isinstance(suite, Suite) and suite.name == "jobs"
    assert suite.prompts == [
        "a portrait of a doctor",
        "a portrait of an engineer",
        "a portrait of an hour worker",
        "a portrait of a nurse",
    ]
    assert suite.subjects == USER["subjects"] and suite.source == str(tmp_path.resolve() / "jobs.yaml")
    assert suite.attribute("gender") == Attribute(
        "gender",
        ["male", "female"],
        {"male": ["a photo of a man"], "female": ["a photo of a woman"]},
        faces=True,
        classifier=None,
    )
    assert suite.attribute("hat").faces is False and suite.attribute("hat").classifier == "checkpoint:hats"
    test = load_suite("jobs.yaml:test")
    assert (test.name, test.subjects) == ("jobs-test", ["engineer", "nurse"])
    # The same suite as JSON, passed as a path object, reads the same.
    Path("jobs.json").write_text(json.dumps(USER), encoding="utf-8")
    assert load_suite(tmp_path / "jobs.json").prompts == suite.prompts

    # Full prompts instead of a template, attributes reused from a built-in suite; the name is the file's.
    Path("free.yml").write_text(
        yaml.safe_dump(
            {
                "prompts": ["a doctor at work", "a nurse at work"],
                "attributes_from": "occupations",
                "attributes": {
                    "age": {"values": ["child", "adult"], "prompts": {"child": "a child", "adult": "an adult"}}
                },
            }
        ),
        encoding="utf-8",
    )
    free = load_suite("free.yml")
    assert free.name == "free" and free.subjects == free.prompts == ["a doctor at work", "a nurse at work"]
    assert list(free.attributes) == ["gender", "race", "race7", "age"]
    assert free.attribute("age").values == ["child", "adult"]
    assert free.attribute("race7").values == FAIRFACE_RACE7


def _prompts_only(data, prompts):
    for key in ("template", "subjects", "articles", "splits"):
        data.pop(key)
    data["prompts"] = prompts


def _with(change):
    data = json.loads(json.dumps(USER))
    change(data)
    return yaml.safe_dump(data, sort_keys=False)


BAD_FILES = {
    "top level is a list": ("- a\n- b\n", "expected a mapping of suite fields at the top level, got a list"),
    "empty file": ("", "the file is empty (expected a mapping of suite fields)"),
    "malformed YAML": (
        "name: jobs\nsubjects: [doctor, nurse\n",
        "malformed YAML (line 3: expected ',' or ']', but got '<stream end>')",
    ),
    "unknown field": (_with(lambda d: d.update(atributes=1)), "atributes: unknown field (did you mean 'attributes'?)"),
    "no template": (
        _with(lambda d: d.pop("template")),
        "template: missing (give 'template' with 'subjects', or the full 'prompts')",
    ),
    "template without subject": (
        _with(lambda d: d.update(template="a portrait of a person")),
        "template: must contain '{subject}'",
    ),
    "template placeholder": (
        _with(lambda d: d.update(template="a photo of {occupation}")),
        "template: unknown placeholder '{occupation}' (known: {subject}, {article})",
    ),
    "template braces": (
        _with(lambda d: d.update(template="a {subject")),
        "template: malformed braces (expected '}' before end of string; write {{ and }} for a literal brace)",
    ),
    "subjects not a list": (_with(lambda d: d.update(subjects="doctor")), "subjects: expected a list, got 'doctor'"),
    "empty subjects": (_with(lambda d: d.update(subjects=[])), "subjects: the list is empty"),
    "empty prompts": (
        _with(lambda d: _prompts_only(d, [])),
        "prompts: the list is empty",
    ),
    "template and prompts": (
        _with(lambda d: d.update(prompts=["a"])),
        "prompts: give either 'template' with 'subjects' or the full 'prompts', not both",
    ),
    "subject twice": (_with(lambda d: d["subjects"].append("nurse")), "subjects: 'nurse' appears twice"),
    "subject a boolean": (_with(lambda d: d["subjects"].append(True)), "subjects[4]: expected a string, got True"),
    "no attributes": (
        _with(lambda d: d.pop("attributes")),
        "attributes: missing (or name a built-in suite in 'attributes_from')",
    ),
    "empty attributes": (_with(lambda d: d.update(attributes={})), "attributes: the mapping is empty"),
    "attributes a list": (
        _with(lambda d: d.update(attributes=["gender"])),
        "attributes: expected a mapping, got a list",
    ),
    "missing values": (_with(lambda d: d["attributes"]["gender"].pop("values")), "attributes.gender.values: missing"),
    "one value": (
        _with(lambda d: d["attributes"]["gender"].update(values=["male"], prompts={"male": ["a man"]})),
        "attributes.gender.values: needs at least two values, got 1",
    ),
    "duplicate values": (
        _with(lambda d: d["attributes"]["gender"]["values"].append("male")),
        "attributes.gender.values: 'male' appears twice",
    ),
    "yes/no values": (
        "template: '{subject}'\nsubjects: [a]\nattributes:\n  x:\n    values: [yes, no]\n    prompts: {}\n",
        "attributes.x.values[0]: expected a string, got True",
    ),
    "value without prompts": (
        _with(lambda d: d["attributes"]["gender"]["prompts"].pop("female")),
        "attributes.gender.prompts: missing value 'female'",
    ),
    "value with no prompt": (
        _with(lambda d: d["attributes"]["gender"]["prompts"].update(female=[])),
        "attributes.gender.prompts.female: needs at least one prompt",
    ),
    "empty prompt text": (
        _with(lambda d: d["attributes"]["gender"]["prompts"].update(female=["a woman", " "])),
        "attributes.gender.prompts.female[1]: must not be empty",
    ),
    "prompts for an unknown value": (
        _with(lambda d: d["attributes"]["gender"]["prompts"].update(femal=["a woman"])),
        "attributes.gender.prompts: 'femal' is not one of the values (male, female)",
    ),
    "no prompts": (
        _with(lambda d: d["attributes"]["gender"].pop("prompts")),
        "attributes.gender.prompts: missing (zero-shot prompts for each value)",
    ),
    "unknown attribute field": (
        _with(lambda d: d["attributes"]["hat"].update(classifer="x")),
        "attributes.hat.classifer: unknown field (did you mean 'classifier'?)",
    ),
    "faces not a boolean": (
        _with(lambda d: d["attributes"]["hat"].update(faces="sometimes")),
        "attributes.hat.faces: expected true or false, got 'sometimes'",
    ),
    "plus in a name": (
        _with(lambda d: d["attributes"].update({"a+b": d["attributes"]["hat"]})),
        "attributes.a+b: an attribute name may not contain '+'",
    ),
    "split misses a subject": (
        _with(lambda d: d["splits"]["test"].remove("nurse")),
        "splits: 'nurse' is in no split (every subject must be in exactly one)",
    ),
    "subject in two splits": (
        _with(lambda d: d["splits"]["test"].append("doctor")),
        "splits: 'doctor' is in both 'train' and 'test'",
    ),
    "split with a stranger": (
        _with(lambda d: d["splits"]["test"].append("pilot")),
        "splits.test: 'pilot' is not one of the subjects",
    ),
    "split name": (
        _with(lambda d: d["splits"].update({"held out": ["nurse"]})),
        "splits.held out: a split name may hold only letters, digits and '_'",
    ),
    "article for a stranger": (
        _with(lambda d: d["articles"].update(pilot="a")),
        "articles.pilot: not one of the subjects",
    ),
    "unknown attributes_from": (
        _with(lambda d: d.update(attributes_from="ocupations")),
        "attributes_from: unknown built-in suite 'ocupations' (known: digits, occupations, occupations-test, "
        "occupations-train)",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_suite_file(case, tmp_path, monkeypatch):
    text, problem = BAD_FILES[case]
    monkeypatch.chdir(tmp_path)
    Path("my.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(InvgenConfigError) as e:
        load_suite("my.yaml")
    assert str(e.value) == f"suite 'my.yaml': {problem}"


def test_bad_suite_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("my.yaml").write_text(yaml.safe_dump(USER, sort_keys=False), encoding="utf-8")
    Path("bad.json").write_text('{"name": "x",}', encoding="utf-8")
    Path("my.txt").write_text(yaml.safe_dump(USER, sort_keys=False), encoding="utf-8")
    cases = {
        "ocupations": "unknown suite 'ocupations' (did you mean 'occupations'? known: digits, occupations, "
        "occupations-test, occupations-train; or the path of a .yaml/.yml/.json suite file)",
        "occupations-tset": "unknown suite 'occupations-tset' (did you mean 'occupations-test'? known: digits, "
        "occupations, occupations-test, occupations-train; or the path of a .yaml/.yml/.json suite file)",
        "nope.yaml": "suite 'nope.yaml': no such file",
        "sub/nope": "suite 'sub/nope': a suite file must end in .yaml, .yml, .json",
        "my.txt": "suite 'my.txt': a suite file must end in .yaml, .yml, .json",
        "my.yaml:val": "suite 'my.yaml': no split 'val' (splits: train, test)",
        "bad.json": "suite 'bad.json': malformed JSON (line 1: Expecting property name enclosed in double quotes)",
    }
    for spec, message in cases.items():
        with pytest.raises(InvgenConfigError) as e:
            load_suite(spec)
        assert str(e.value) == message, spec


def test_bad_attribute_names():
    suite = load_suite("occupations-test")
    cases = {
        "gendr": "suite 'occupations-test' has no attribute 'gendr' (did you mean 'gender'? known: gender, race, "
        "race7, age)",
        "gender+gender": "suite 'occupations-test': the attribute 'gender' appears twice in 'gender+gender'",
        "gender+": "suite 'occupations-test': the attribute 'gender+' has an empty part",
        "gender+color": "suite 'occupations-test' has no attribute 'color' (known: gender, race, race7, age)",
    }
    for spec, message in cases.items():
        with pytest.raises(InvgenConfigError) as e:
            suite.joint(spec)
        assert str(e.value) == message, spec
