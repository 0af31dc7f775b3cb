"""The app's work functions called directly, without serving a page: defaults, audit folders, the views tab's
classes, and the gradio handler that binds them."""

import inspect
from types import SimpleNamespace

import pytest

from invgen.app.audits import AUDITS, audit_folder, typed_audit_folder
from invgen.app.compare_tab import resolve_classifier
from invgen.app.defaults import AppDefaults, defaults_for
from invgen.app.models import Models
from invgen.app.page import starting_models
from invgen.app.views_tab import class_prompts_of, source_class
from invgen.errors import InvgenConfigError


@pytest.fixture()
def digits_model(tmp_path):
    folder = tmp_path / "base"
    folder.mkdir()
    (folder / "train_config.yaml").write_text("data:\n  builder: colored_digits\n  palette: two\n")
    return folder


def test_a_digits_model_starts_on_the_benchmark_and_any_other_on_the_general_defaults(digits_model, tmp_path):
    d = defaults_for(digits_model)
    assert d.classifier == "oracle:color:two" and d.prompts == "a photo of the digit 3\na photo of the digit 7"
    assert d.attribute == "color" and d.suite(["digits", "occupations-test"]) == "digits"
    for other in (defaults_for(tmp_path), defaults_for(None), defaults_for("")):
        assert other.classifier is None and other.prompts == "" and other.attribute == "gender"
        assert other.suite(["digits", "occupations-test"]) == "occupations-test"
        assert other.suite(["digits"]) == "occupations-test" and other.class_prompts == ()
    # The digits model's classes are the ten digits, from the dataset builder: general code names none.
    assert len(d.class_prompts) == 10 and d.class_prompts[3] == "a photo of the digit 3" and d.source_class == 3
    assert AppDefaults().suite(["digits"]) == ""


def test_the_views_tab_takes_typed_classes_or_the_defaults_and_checks_the_index(digits_model):
    assert class_prompts_of(" a cat \n\n a dog ", str(digits_model)) == ["a cat", "a dog"]
    assert class_prompts_of("", str(digits_model))[3] == "a photo of the digit 3"
    with pytest.raises(InvgenConfigError, match="write the class prompts"):
        class_prompts_of("", "")
    assert source_class("a\nb", 1, "") == (["a", "b"], 1)
    with pytest.raises(InvgenConfigError, match=r"source class must lie in 0..1, got 2"):
        source_class("a\nb", 2, "")


def test_auto_without_a_known_classifier_reads_nothing_and_says_why(tmp_path, digits_model):
    clf, spec, attribute, note = resolve_classifier(Models(), None, str(tmp_path), "auto", "")
    assert (clf, spec, attribute) == (None, "", "") and note.startswith("No attribute classifier")
    # CLIP steps in only with the values to read.
    assert resolve_classifier(Models(), "/clip", str(tmp_path), "", "")[0] is None


def test_the_page_starts_on_the_first_adapter_and_its_base():
    found = SimpleNamespace(pipelines=["p1", "p2"], adapters={"a1": "p2"})
    assert starting_models(found, None, None) == ("p2", "a1")
    assert starting_models(found, "p1", None) == ("p1", "a1")
    assert starting_models(found, None, "") == ("p1", "")
    assert starting_models(SimpleNamespace(pipelines=[], adapters={}), None, None) == (None, None)


def test_an_audit_folder_is_named_from_its_settings_or_by_a_safe_name(tmp_path):
    settings = {"pipeline": "runs/base/", "adapter": "runs/adapter", "scale": 1.0, "suite": "digits",
                "per_prompt": 2, "seed": 0, "steps": 2, "prompts_limit": 1}
    assert audit_folder(tmp_path, "", settings) == tmp_path / AUDITS / "base-adapter-s1-digits-n2-seed0-steps2-first1"
    assert audit_folder(tmp_path, " mine ", settings) == tmp_path / AUDITS / "mine"
    for bad in ("../up", "a b", ".."):
        with pytest.raises(InvgenConfigError, match="may hold only letters"):
            audit_folder(tmp_path, bad, settings)


def test_an_audit_folder_is_opened_by_path_or_by_the_name_the_tab_gave(tmp_path):
    (tmp_path / AUDITS / "tiny").mkdir(parents=True)
    assert typed_audit_folder(tmp_path, "tiny") == tmp_path / AUDITS / "tiny"
    assert typed_audit_folder(tmp_path, str(tmp_path)) == tmp_path
    with pytest.raises(InvgenConfigError, match="choose or type an audit folder"):
        typed_audit_folder(tmp_path, "  ")


def test_a_handler_binds_the_leading_arguments_and_shows_errors_as_one_sentence():
    gr = pytest.importorskip("gradio", reason="the app needs the [app] extra (gradio)")
    from invgen.app.helpers import handler, no_progress

    def work(models: Models, text: str, progress=no_progress) -> str:
        progress(0.5, desc="half")
        if not text:
            raise InvgenConfigError("type something")
        return f"{models}:{text}"

    event = handler(gr, work, "m")
    params = inspect.signature(event).parameters
    assert list(params) == ["text", "progress"] and isinstance(params["progress"].default, gr.Progress)
    assert event.__name__ == "work" and event("x", no_progress) == "m:x"
    with pytest.raises(gr.Error, match="type something"):
        event("", no_progress)
