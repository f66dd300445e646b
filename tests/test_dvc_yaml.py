"""dvc.yaml against the code, as DVC resolves it (the evaluate matrix and ${...} expanded from params.yaml):

- each stage's code deps are exactly the files Python runs for its command: its module, and every module of the
  `stages` package that module imports, directly or not, lazy imports inside functions included, with the
  packages' __init__ files (derived from the code with `ast`, never imported);
- each stage's data deps, outs, metrics and plots are the paths stages/lib/paths.py names;
- a stage that loads models/base declares the model params the loader reads, and no other.
"""
from __future__ import annotations

import ast
import shlex
from pathlib import Path

import pytest
from conftest import ROOT

from stages.lib import paths
from stages.lib.params import ModelParams, load_params

PACKAGE = "stages"

# What precision_for and the clean loader read (stages/lib/model_session.py, loader.py). name_or_path and
# revision are prepare_base's alone: later stages read the model's identity from models/base.
LOAD_PARAMS = {"model.dtype", "model.quantization", "model.attn_implementation", "model.threads",
               "model.trust_remote_code"}


# --- the import closure ------------------------------------------------------------------------------------


def module_file(dotted: str) -> Path | None:
    """The file Python runs for a module of the project (a package's __init__.py), or None."""
    base = ROOT.joinpath(*dotted.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def imported_names(path: Path) -> set[str]:
    """Every dotted name an import statement anywhere in the file names (absolute; for ``from a import b``
    both ``a`` and ``a.b``, since b may be a submodule)."""
    rel = path.relative_to(ROOT).with_suffix("")
    package = list(rel.parts[:-1])  # for __init__.py too: its package is the folder
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            names.add(module)
            names |= {f"{module}.{alias.name}" for alias in node.names}
    return names


def import_closure(module: str) -> set[str]:
    """Files (relative to the repo) Python runs from the `stages` package when ``module`` runs with ``-m``."""
    todo, seen = [module], set()
    while todo:
        parts = todo.pop().split(".")
        if parts[0] != PACKAGE:
            continue
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__.py and a/b/__init__.py first
            path = module_file(".".join(parts[:i]))
            if path is not None and path not in seen:
                seen.add(path)
                todo.extend(imported_names(path))
    return {p.relative_to(ROOT).as_posix() for p in seen}


def command_modules(cmd: str) -> list[str]:
    """The modules a stage's command runs: ``python -m stages.x``, and for ``python -m stages.launch x`` the
    launcher and the stage it runs."""
    words = shlex.split(cmd)
    module = words[words.index("-m") + 1]
    return [module, f"{PACKAGE}.{words[words.index('-m') + 2]}"] if module == f"{PACKAGE}.launch" else [module]


def test_the_closure_follows_lazy_and_relative_imports():
    closure = import_closure("stages.make_instructions")
    # make_instructions imports the generation code only inside a function, relatively (from .lib.generation)
    assert {"stages/lib/generation.py", "stages/lib/slot_decoder.py", "stages/__init__.py",
            "stages/lib/__init__.py"} <= closure
    assert "stages/lib/trainers.py" not in closure and "stages/report.py" not in closure


# --- dvc.yaml as DVC reads it --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dvc_stages() -> dict[str, dict]:
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        out = {}
        for stage in repo.index.stages:
            deps = [d.def_path for d in stage.deps if not hasattr(d, "params")]
            params = [key for d in stage.deps if hasattr(d, "params") for key in d.params]
            outs = [o.def_path for o in stage.outs if not o.metric and not o.plot]
            out[stage.addressing] = {"cmd": stage.cmd, "deps": deps, "params": params, "outs": outs,
                                     "metrics": [o.def_path for o in stage.outs if o.metric],
                                     "plots": [o.def_path for o in stage.outs if o.plot]}
        return out


def test_each_stage_depends_on_exactly_the_code_it_runs(dvc_stages):
    """Not the whole stages/lib: an edit to a module reruns only the stages that import it."""
    problems = []
    for name, stage in dvc_stages.items():
        runs = set().union(*(import_closure(m) for m in command_modules(stage["cmd"])))
        declared = {d for d in stage["deps"] if d.startswith(f"{PACKAGE}/")}
        if runs - declared:
            problems.append(f"{name}: missing {sorted(runs - declared)}")
        if declared - runs:
            problems.append(f"{name}: declared but never imported {sorted(declared - runs)}")
    assert not problems, "dvc.yaml's code deps differ from the import closures:\n" + "\n".join(problems)


def test_stages_that_load_the_model_declare_the_model_params_they_read(dvc_stages):
    loaders = {name for name, stage in dvc_stages.items()
               if "stages/lib/model_session.py" in set().union(*map(import_closure, command_modules(stage["cmd"])))}
    assert loaders == set(dvc_stages) - {"prepare_base", "report"}
    for name, stage in dvc_stages.items():
        model = {p for p in stage["params"] if p == "model" or p.startswith("model.")}
        expected = ({f"model.{k}" for k in ModelParams.model_fields} if name == "prepare_base"
                    else LOAD_PARAMS if name in loaders else set())
        assert model == expected, name


def _expected() -> dict[str, dict]:
    """Every stage's inputs (besides code) and outputs, from stages/lib/paths.py."""
    params = load_params(ROOT / "params.yaml")
    p = paths
    expected = {
        "prepare_base": dict(deps=[], outs=[p.BASE_MODEL], metrics=[p.metrics_path("prepare_base")]),
        "make_instructions": dict(deps=[p.TASKS, p.CONSTRAINTS, p.BASE_MODEL],
                                  outs=[p.TRAIN_INSTRUCTIONS, *map(p.suite_path, p.MADE_SUITES)]),
        "generate_sft": dict(deps=[p.BASE_MODEL, p.TRAIN_INSTRUCTIONS, p.CONSTRAINTS, p.FEWSHOT],
                             outs=[p.SFT_DATA_DIR], metrics=[p.metrics_path("generate_sft")]),
        "train_sft": dict(deps=[p.ACCELERATE_CONFIGS, p.BASE_MODEL, p.SFT_DATA_DIR], outs=[p.SFT_ADAPTER],
                          metrics=[p.metrics_path("train_sft")], plots=[p.curves_dir("train_sft")]),
        "build_prefs": dict(deps=[p.BASE_MODEL, p.SFT_ADAPTER, p.SFT_DATA_DIR], outs=[p.PREFS_DIR],
                            metrics=[p.metrics_path("build_prefs")]),
        "train_dpo": dict(deps=[p.ACCELERATE_CONFIGS, p.BASE_MODEL, p.model_dir(params.train_dpo.init), p.PREFS_DIR],
                          outs=[p.DPO_ADAPTER], metrics=[p.metrics_path("train_dpo")],
                          plots=[p.curves_dir("train_dpo")]),
        "report": dict(deps=[p.OUTCOMES_DIR], outs=[p.REPORT_MD], metrics=[p.metrics_path("report")],
                       plots=[p.CATEGORY_CSV, p.CATEGORY_PNG]),
    }
    for model in p.MODELS:
        for suite in params.evaluate.suites:
            expected[f"evaluate@{model}-{suite}"] = dict(
                deps=[p.BASE_MODEL, p.model_dir(model), p.suite_path(suite)], outs=[p.outcomes_path(model, suite)],
                metrics=[p.eval_metrics_path(model, suite)])
    return {name: {kind: sorted({Path(x).as_posix() for x in io.get(kind, [])})
                   for kind in ("deps", "outs", "metrics", "plots")} for name, io in expected.items()}


def test_dvc_yaml_and_paths_py_name_the_same_paths(dvc_stages):
    """dvc.yaml is where a reader sees the paths; paths.py is where the code takes them from: they agree,
    stage by stage (the evaluate matrix is paths.MODELS x evaluate.suites)."""
    expected = _expected()
    assert set(dvc_stages) == set(expected)
    for name, stage in dvc_stages.items():
        declared = {"deps": sorted({d for d in stage["deps"] if not d.startswith(f"{PACKAGE}/")}),
                    **{kind: sorted(set(stage[kind])) for kind in ("outs", "metrics", "plots")}}
        assert declared == expected[name], name


def test_metrics_follow_one_naming_scheme(dvc_stages):
    """A stage's metrics are metrics/<stage>.json, or metrics/<stage>/<item>.json for a matrix stage."""
    with_metrics = {name: stage["metrics"] for name, stage in dvc_stages.items() if stage["metrics"]}
    assert set(dvc_stages) - set(with_metrics) == {"make_instructions"}  # its summary is printed
    for name, metrics in with_metrics.items():
        base, _, item = name.partition("@")
        wanted = paths.stage_files(base) / f"{item}.json" if item else paths.metrics_path(base)
        assert metrics == [wanted.as_posix()], name


# --- no artifact path outside paths.py -----------------------------------------------------------------------


def _named_paths() -> set[str]:
    """Every path paths.py names, for the models, the suites in use and the stages."""
    params = load_params(ROOT / "params.yaml")
    suites = set(params.evaluate.suites) | set(paths.MADE_SUITES)
    named = {v for v in vars(paths).values() if isinstance(v, Path)}
    named |= {paths.model_dir(m) for m in paths.MODELS} | {paths.suite_path(s) for s in suites}
    named |= {f(m, s) for f in (paths.outcomes_path, paths.eval_metrics_path) for m in paths.MODELS for s in suites}
    named |= {f(stage) for f in (paths.metrics_path, paths.stage_files, paths.curves_dir)
              for stage in ("prepare_base", "generate_sft", "train_sft", "build_prefs", "train_dpo", "report")}
    return {p.as_posix() for p in named if len(p.parts) > 1}  # "metrics" alone is also a word


ROOTS = {"models", "data", "metrics", "configs"}


def _spelt_paths(path: Path, named: set[str]) -> list[str]:
    """A string that is a path paths.py names (or lies inside one), or `... / "models"`: a path that should come
    from paths.py. Docstrings and messages that mention a path (a string with spaces or a colon) are not flagged."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and not set(node.value) & set(" :\n"):
            text = node.value.rstrip("/")
            if text in named or any(text.startswith(p + "/") for p in named):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant) \
                and node.right.value in ROOTS:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: / {node.right.value!r}")
    return found


def test_only_paths_py_spells_artifact_paths():
    """Stages, tests and benchmarks take every artifact path from stages/lib/paths.py."""
    named = _named_paths()
    modules = [p for p in (ROOT / PACKAGE).rglob("*.py") if p.name != "paths.py"]
    modules += list((ROOT / "tests").glob("*.py")) + list((ROOT / "benchmarks").glob("*.py"))
    hits = [hit for module in sorted(modules) for hit in _spelt_paths(module, named)]
    assert hits == [], "\n".join(hits)
