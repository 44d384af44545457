"""The ``auditor`` command: run, fit, report, validate, schema, plugins.

Exit codes: 0 every check passed, 1 a check failed or could not run, 2 the audit could not run
(bad spec, missing file, plugin conflict); errors are one line on stderr, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from .errors import AuditorError, one_line


def _run(args: argparse.Namespace) -> int:
    from .engine import disabled_plugins, run_audit
    from .plugins import load_registry
    from .results import verdict_table
    from .spec import load_spec

    spec = load_spec(args.spec)
    if args.engine:
        spec = spec.model_copy(update={"execution": spec.execution.model_copy(
            update={"engine": args.engine})})
    registry = load_registry(disabled=disabled_plugins(spec, args.disable_plugin))
    results = run_audit(spec, Path(args.spec).parent, registry=registry, output_dir=args.output,
                        progress=not args.quiet, strict=args.strict, resume=args.resume,
                        wait=args.wait, on_wait=lambda line: print(line, file=sys.stderr, flush=True))
    print(verdict_table(results))
    for warning in results["health"]["warnings"]:
        print(f"warning: {warning}")
    if results["resumed_batches"]:
        print(f"resumed: {results['resumed_batches']} batches taken from the journal")
    if results["data"]["skipped"]:
        print(f"warning: {len(results['data']['skipped'])} samples skipped (results.json data.skipped)")
    print(f"results: {results['output_directory']}")
    return 0 if results["verdict"] == "PASS" else 1


def _fit(args: argparse.Namespace) -> int:
    from .engine import disabled_plugins, fit_audit
    from .plugins import load_registry
    from .spec import load_spec

    spec = load_spec(args.spec)
    registry = load_registry(disabled=disabled_plugins(spec, args.disable_plugin))
    states = fit_audit(spec, Path(args.spec).parent, labels=args.explainer, registry=registry,
                       progress=not args.quiet)
    for label, path in states.items():
        print(f"fitted {label}: {path}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from .outputs import rerender
    from .plugins import load_registry

    written = rerender(args.results, args.output, args.formats, load_registry())
    for note in written.notes:
        print(note, file=sys.stderr)
    print(f"wrote {', '.join(written.formats)} to {written.out}")
    return 0 if written.results.verdict == "PASS" else 1


def _validate(args: argparse.Namespace) -> int:
    from . import model
    from .engine import disabled_plugins
    from .plugins import load_registry
    from .spec import load_spec

    spec = load_spec(args.spec)
    registry = load_registry(disabled=disabled_plugins(spec, args.disable_plugin))
    registry.make_explainers(spec)
    from .check import AuditContext
    from .engine import preflight

    names = spec.model.class_names
    preflight(registry.make_checks(spec), AuditContext(num_classes=len(names) if names else None))
    loaders = registry.manager.hook.auditor_load_model.get_hookimpls()
    if all(impl.plugin is model for impl in loaders):  # a plugin's loader may read `model` its way
        model.check_source(spec.model, Path(args.spec).parent)
    print(f"{args.spec}: valid ({len(spec.explainers)} explainers, {len(spec.checks)} checks)")
    return 0


def _schema(args: argparse.Namespace) -> int:
    from .results_schema import json_schema
    from .spec import AuditSpec

    print(json.dumps(json_schema() if args.results else AuditSpec.model_json_schema(), indent=2))
    return 0


def _plugins(args: argparse.Namespace) -> int:
    from .plugins import load_registry

    from .engine import disabled_plugins
    from .explain import capabilities

    registry = load_registry(disabled=disabled_plugins(None, args.disable_plugin))
    rows = [("kind", "name", "version", "distribution", "capabilities")]
    rows += [(p.kind, p.name, p.version, p.distribution, ",".join(capabilities(p.cls)) or "-")
             for p in registry.describe()]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    for name, why in registry.failed.items():
        print(f"failed to load: {name}: {why}")
    for name, who in registry.blocked.items():
        print(f"blocked: {name} (by {who})")
    return 0


def _disable_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--disable-plugin", action="append", default=[], metavar="NAME",
                        help="do not load this installed plugin (entry-point or distribution "
                             "name); repeatable")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="auditor", description="Audit the explanations of an "
                                     "image classifier against a YAML spec.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run an audit; write results.json, junit.xml, report.html/pdf")
    run.add_argument("spec", help="audit spec (YAML)")
    run.add_argument("--output", type=Path, help="output directory (default: from the spec)")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument("--strict", action="store_true", help="borderline cells (more samples could "
                     "change the verdict: the deciding metric's 95%% interval straddles its "
                     "threshold) fail the audit")
    run.add_argument("--engine", choices=["local", "ray"], help="where batches are measured "
                     "(default: the spec's execution.engine); ray needs the ray extra")
    run.add_argument("--resume", action="store_true", help="continue a killed run from the "
                     "journal in its output directory: only the batches it lacks are computed")
    run.add_argument("--wait", action="store_true", help="when another run is writing the output "
                     "directory, wait for it to finish (default: exit 2 naming it)")
    _disable_flag(run)
    run.set_defaults(func=_run)
    fit = sub.add_parser("fit", help="fit the trainable explainers of a spec (VarSal, DRE) and "
                         "store their states for `auditor run`")
    fit.add_argument("spec", help="audit spec (YAML)")
    fit.add_argument("--explainer", action="append", metavar="LABEL",
                     help="fit only this explainer label of the spec; repeatable (default: all "
                          "that need fitting)")
    fit.add_argument("--quiet", action="store_true", help="no progress bars")
    _disable_flag(fit)
    fit.set_defaults(func=_fit)
    report = sub.add_parser("report", help="re-render reports from a results.json (no model run)")
    report.add_argument("results", help="results.json of an earlier run")
    report.add_argument("--output", type=Path, help="output directory (default: next to results.json)")
    report.add_argument("--formats", nargs="+", choices=["html", "pdf", "junit", "json"],
                        help="default: the formats of the spec, except json")
    report.set_defaults(func=_report)
    validate = sub.add_parser("validate", help="check a spec without running it")
    validate.add_argument("spec")
    _disable_flag(validate)
    validate.set_defaults(func=_validate)
    schema = sub.add_parser("schema", help="print the JSON Schema of the spec (or of results.json)")
    schema.add_argument("--results", action="store_true", help="the schema of results.json instead")
    schema.set_defaults(func=_schema)
    plugins = sub.add_parser("plugins", help="list explainers and checks")
    _disable_flag(plugins)
    plugins.set_defaults(func=_plugins)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            for noise in ("Input Tensor 0 did not already require gradients",
                          "Setting backward hooks on ReLU activations"):  # Captum's chatter
                warnings.filterwarnings("ignore", message=noise)
            return args.func(args)
    except AuditorError as exc:
        print(f"error: {one_line(str(exc), 600)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BaseException as exc:  # an unexpected failure (a plugin's SystemExit too): one line
        print(f"error: the audit could not run: {type(exc).__name__}: {one_line(str(exc), 400)}",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
