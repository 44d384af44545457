"""The project's errors survive pickling (what a Ray worker's error goes through on its way to the
driver): same class, same one-line message, same attributes; a spec path is written one way."""
from __future__ import annotations

import pickle
import threading

import pytest

from auditor.errors import (AuditorError, DataError, PluginError, SpecError, join_path, key_path,
                            one_line)
from auditor.health import HealthError
from auditor.journal import JournalError
from auditor.state_store import StateError


def round_trip(error: Exception) -> Exception:
    return pickle.loads(pickle.dumps(error))


def test_a_spec_error_comes_back_as_itself():
    error = SpecError("model.weights", "file not found: /x/examples/quickstart/weights.pt",
                      "examples/quickstart/weights.pt")
    back = round_trip(error)
    assert type(back) is SpecError and str(back) == str(error) == (
        "model.weights: file not found: /x/examples/quickstart/weights.pt "
        "(got 'examples/quickstart/weights.pt')")
    assert (back.path, back.value) == ("model.weights", "examples/quickstart/weights.pt")


def test_a_spec_error_without_a_value_and_with_a_long_message():
    error = SpecError("checks[1].thresholds.ssim", "x" * 1000)
    back = round_trip(error)
    assert str(back) == str(error) and str(back).endswith("...") and back.value is ...


def test_a_value_that_does_not_pickle_becomes_its_repr():
    error = SpecError("model.factory_kwargs", "refused", threading.Lock())
    back = round_trip(error)
    assert str(back) == str(error) and "lock" in back.value


@pytest.mark.parametrize("cls", [AuditorError, DataError, PluginError, HealthError, JournalError,
                                 StateError])
def test_every_project_error_comes_back_as_itself(cls):
    error = cls("data/manifest.csv row 3: label is empty; expected a class index or class name")
    error.note = "an attribute"
    back = round_trip(error)
    assert type(back) is cls and str(back) == str(error) and back.note == "an attribute"
    assert isinstance(back, AuditorError)


def test_spec_paths():
    assert join_path("checks", [1, "thresholds", "ssim"]) == "checks[1].thresholds.ssim"
    assert key_path("model.factory_kwargs", "a b") == "model.factory_kwargs['a b']"
    assert join_path("", ["data", "path"]) == "data.path"
    assert one_line("a\n b") == "a b"
