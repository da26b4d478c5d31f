"""Mutation testing of the modules that decide (mutmut): ``make mutation`` and CI's floor.

mutmut mutates code found under ``src/`` and imports it from there; the library lives under
``include/``, so each run stages a copy (``src/rankflow`` and the unit tests that cover the
chosen modules) under ``$RANKFLOW_HOME/mutation/<scope>`` and runs mutmut in it. The checkout is
never touched, and mutmut's cache in the stage makes a rerun check only what changed.

The score is killed / all mutants: a mutant no test runs counts as a survivor, a timeout as a
kill (the mutant made the tests hang, which fails them). ``--min-score`` fails the run below it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# scope -> (modules under include/rankflow, unit tests that decide them)
SCOPES: dict[str, tuple[list[str], list[str]]] = {
    "ci": (
        ["evaluation/gate.py", "store/encoding.py"],
        [
            "tests/unit/evaluation/test_gate.py",
            "tests/unit/evaluation/test_gate_margins.py",
            "tests/unit/evaluation/test_gate_evidence.py",
            "tests/unit/evaluation/test_gate_bootstrap.py",
            "tests/unit/evaluation/test_gate_checks.py",
            "tests/unit/store/test_encoding.py",
            "tests/unit/store/test_encoding_contract.py",
        ],
    ),
    "deciding": (
        [
            "evaluation/gate.py",
            "evaluation/metrics.py",
            "evaluation/propensity.py",
            "store/encoding.py",
            "monitoring/rules.py",
        ],
        [
            "tests/unit/evaluation/test_gate.py",
            "tests/unit/evaluation/test_gate_margins.py",
            "tests/unit/evaluation/test_gate_evidence.py",
            "tests/unit/evaluation/test_gate_bootstrap.py",
            "tests/unit/evaluation/test_gate_checks.py",
            "tests/unit/evaluation/test_metrics.py",
            "tests/unit/evaluation/test_metrics_inputs.py",
            "tests/unit/evaluation/test_propensity.py",
            "tests/unit/store/test_encoding.py",
            "tests/unit/store/test_encoding_contract.py",
            "tests/unit/monitoring/test_monitoring_rules.py",
            "tests/unit/monitoring/test_monitoring_rules_margins.py",
        ],
    ),
}

KILLED = ("killed", "timeout", "caught_by_type_check")


def stage(scope: str, folder: Path) -> None:
    """Copy the library and the scope's tests into ``folder`` with mutmut's configuration."""
    modules, tests = SCOPES[scope]
    for part in ("src", "tests"):
        shutil.rmtree(folder / part, ignore_errors=True)
    shutil.copytree(ROOT / "include" / "rankflow", folder / "src" / "rankflow")
    for test in ["tests/conftest.py", *tests]:
        (folder / test).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / test, folder / test)
    listed = ", ".join(f'"src/rankflow/{m}"' for m in modules)
    selection = ", ".join(f'"{t}"' for t in tests)
    (folder / "pyproject.toml").write_text(
        "[tool.pytest.ini_options]\n"
        'addopts = "-p no:cacheprovider -q"\n'
        'filterwarnings = ["ignore::DeprecationWarning", "ignore::FutureWarning"]\n\n'
        "[tool.mutmut]\n"
        'source_paths = ["src/rankflow"]\n'
        f"only_mutate = [{listed}]\n"
        f"pytest_add_cli_args_test_selection = [{selection}]\n"
    )


def mutmut(folder: Path, *args: str, log: Path | None = None) -> str:
    """Run one mutmut command in the stage; return its output (or write it to ``log``)."""
    command = [str(Path(sys.executable).parent / "mutmut"), *args]
    # mutmut forks one child per mutant from a process that already ran the tests; a child that
    # then enters an OpenMP region (XGBoost's) waits forever on the parent's libgomp thread pool,
    # and the wall-clock kill turns that survivor into a "timeout", counted as killed. One thread
    # per process keeps the children honest (and the shared machine usable).
    env = {
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        **os.environ,
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    if log is None:
        done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"mutmut {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout
    with log.open("w") as out:
        done = subprocess.run(command, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise RuntimeError(f"mutmut {' '.join(args)} failed; its output is in {log}")
    return ""


def survivors(results: str) -> list[str]:
    """The mutants ``mutmut results`` lists as not killed, with their status."""
    return [line.strip() for line in results.splitlines() if line.strip()]


def score(stats: dict[str, int]) -> float:
    """Share of the mutants the tests detected (no test at all counts as not detected)."""
    total = int(stats["total"]) - int(stats.get("skipped", 0))
    return sum(int(stats.get(k, 0)) for k in KILLED) / total if total else 0.0


def main(argv: list[str] | None = None) -> int:
    """Stage, run mutmut, print the score and the survivors; fail below ``--min-score``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scope", choices=sorted(SCOPES), default="deciding")
    parser.add_argument("--min-score", type=float, default=0.0)
    args = parser.parse_args(argv)
    home = Path(os.environ.get("RANKFLOW_HOME", ROOT / ".rankflow"))
    folder = home / "mutation" / args.scope
    folder.mkdir(parents=True, exist_ok=True)
    stage(args.scope, folder)
    log = folder / "mutmut-run.log"
    print(f"mutmut over {', '.join(SCOPES[args.scope][0])} (log: {log})", flush=True)
    mutmut(folder, "run", log=log)
    mutmut(folder, "export-cicd-stats")
    stats = json.loads((folder / "mutants" / "mutmut-cicd-stats.json").read_text())
    left = survivors(mutmut(folder, "results"))
    (folder / "survivors.txt").write_text("\n".join(left) + "\n")
    achieved = score(stats)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(stats.items()) if v)
    print(f"mutation score {achieved:.1%} ({counts})")
    print(f"{len(left)} not killed (list: {folder / 'survivors.txt'}; `mutmut show NAME` there)")
    for line in left[:40]:
        print(f"  {line}")
    if achieved < args.min_score:
        print(f"below the floor of {args.min_score:.0%}: add tests that kill the survivors")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
