"""The plugin contract of xai-auditor.

Plugins are modules (or objects) registered under the entry-point group ``auditor``; they
implement any of these hooks with the ``@auditor.hookimpl`` decorator. The built-in explainers and
checks in ``auditor_plugins`` use exactly this contract.
"""
import pluggy

hookspec = pluggy.HookspecMarker("auditor")
hookimpl = pluggy.HookimplMarker("auditor")


@hookspec
def auditor_explainers():
    """Called once at start-up; return a list of `auditor.Explainer` subclasses."""


@hookspec
def auditor_checks():
    """Called once at start-up; return a list of `auditor.Check` subclasses."""


@hookspec(firstresult=True)
def auditor_load_model(spec, base_dir):
    """Called to build the model; return an `auditor.model.LoadedModel`, or None to pass.

    `spec` is the validated `model` section, `base_dir` the directory relative paths resolve from.
    """


@hookspec(firstresult=True)
def auditor_load_data(spec, base_dir, seed, image_size):
    """Called to open the data; return an `auditor.data.SampleSource`, or None to pass.

    `spec` is the validated `data` section; `image_size` is (H, W) to resize to, or None.
    """


@hookspec
def auditor_report_partials():
    """Called when a report is rendered; return {check name: Jinja2 template source} to replace
    the generic body of that check's section (context: `check`, `cells`, `results`)."""
