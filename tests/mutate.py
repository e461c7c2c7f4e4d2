"""Mutation testing of the core modules with mutmut, one group of modules at a time (`make mutate`; not in CI).

Each group of `[tool.hf_landscape.mutation.groups]` in `pyproject.toml` names the modules it mutates and the tests
that exercise them; it may narrow the mutants to some functions (`functions`: patterns of mutant names), leave out
mutants that another group counts (`skip`), and set mutmut settings of its own (e.g. `pytest_add_cli_args`). A group runs in its own folder, `.mutmut/<group>/`, holding links to the package and the tests
and a `pyproject.toml` made of the shared `[tool.mutmut]` settings with the group's modules (`only_mutate`) and tests
(`pytest_add_cli_args_test_selection`). mutmut runs, in each mutant, only the tests of the group that execute the
mutated function. Mutants that survive and are judged equivalent are listed under their reason in
`[tool.hf_landscape.mutation.equivalent]`; the score is killed / (mutants tested − equivalent ones). Timeouts count
as killed (the mutant made the tests hang).

    python tests/mutate.py                      # every group, from scratch
    python tests/mutate.py checkpoint surface   # some groups
    python tests/mutate.py engine --survivors   # only the survivors of the last run of the group, again
    python tests/mutate.py engine --timeouts    # the survivors and the mutants stopped as hanging, again
    python tests/mutate.py engine --check-timeouts 300   # those stopped as hanging, each in a fresh process
    python tests/mutate.py --summary            # the scores of the last runs, without running anything
    python tests/mutate.py surface --show       # ... and the diff of every surviving mutant

Run it at the lowest CPU priority (`nice -n 19`, as `make mutate` does) on a shared machine.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".mutmut"
LINKS = ("hf_landscape", "tests", "examples", "docs", "README.md")  # what the tests read
GROUP_KEYS = ("mutate", "tests", "functions", "skip")  # the rest of a group's keys are mutmut settings

# mutmut's exit codes, as its `status_by_exit_code`
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", 35: "suspicious"}
STATUS.update({code: "timeout" for code in (36, 24, -24, 152, 255)})
STATUS.update({-11: "segfault", -9: "segfault", 37: "type check", None: "not checked"})


def settings() -> dict[str, Any]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def toml_table(name: str, table: dict[str, Any]) -> str:
    return f"[{name}]\n" + "".join(f"{key} = {toml_value(value)}\n" for key, value in table.items()) + "\n"


def prepare(group: str, spec: dict[str, Any], config: dict[str, Any], *, fresh: bool) -> Path:
    """`.mutmut/<group>/` with links to the package and tests and the group's mutmut and pytest settings."""
    folder = WORK / group
    if fresh and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in LINKS:
        link = folder / name
        if not link.is_symlink() and (ROOT / name).exists():
            link.symlink_to(Path("..") / ".." / name)
    mutmut = dict(config["tool"]["mutmut"])
    mutmut["only_mutate"] = list(spec["mutate"])
    mutmut["pytest_add_cli_args_test_selection"] = list(spec["tests"])
    mutmut["also_copy"] = [name for name in LINKS[2:] if (ROOT / name).exists()]  # besides tests/
    mutmut.update({k: v for k, v in spec.items() if k not in GROUP_KEYS})  # the group's own mutmut settings
    # The project's pyproject.toml (tests read it too), its [tool.mutmut] table replaced by the group's.
    text = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[)", "", (ROOT / "pyproject.toml").read_text())
    (folder / "pyproject.toml").write_text(
        f"# Written by tests/mutate.py for the group {group!r}; edit the project's pyproject.toml instead.\n"
        + text.rstrip("\n")
        + "\n\n"
        + toml_table("tool.mutmut", mutmut)
    )
    return folder


def results(folder: Path) -> dict[str, dict[str, Any]]:
    """{mutant name: exit code} per mutated file of the group's last run."""
    out = {}
    for meta in sorted((folder / "mutants").rglob("*.py.meta")):
        data = json.loads(meta.read_text())
        if data["exit_code_by_key"]:
            source = meta.relative_to(folder / "mutants").as_posix().removesuffix(".meta")
            out[source] = data["exit_code_by_key"]
    return out


def summarize(
    group: str, folder: Path, equivalent: dict[str, str], spec: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Counts per module; a group's `functions` (mutant-name patterns) keep only their mutants, its `skip`
    patterns leave out the mutants another group counts."""
    functions, skip = (spec or {}).get("functions"), (spec or {}).get("skip", [])
    rows = []
    for source, codes in results(folder).items():
        if functions:
            codes = {n: c for n, c in codes.items() if any(fnmatch.fnmatchcase(n, f) for f in functions)}
        codes = {n: c for n, c in codes.items() if not any(fnmatch.fnmatchcase(n, f) for f in skip)}
        status = {name: STATUS.get(code, "suspicious") for name, code in codes.items()}
        counts = Counter(status.values())
        survivors = sorted(n for n, s in status.items() if s in ("survived", "suspicious", "segfault"))
        judged = [n for n in survivors if n in equivalent]
        caught = counts["killed"] + counts["timeout"]
        tested = caught + len(survivors)
        score = caught / (tested - len(judged)) if tested - len(judged) else float("nan")
        rows.append(
            {
                "group": group,
                "module": source,
                "mutants": len(codes),
                "killed": counts["killed"],
                "timeout": counts["timeout"],
                "survived": len(survivors),
                "equivalent": len(judged),
                "no tests": counts["no tests"],
                "not checked": counts["not checked"],
                "score": score,
                "survivors": [n for n in survivors if n not in equivalent],
            }
        )
    return rows


def timed_out(folder: Path, spec: dict[str, Any]) -> list[str]:
    """The group's mutants whose last run was stopped as hanging."""
    functions, skip = spec.get("functions"), spec.get("skip", [])
    names = [n for codes in results(folder).values() for n, c in codes.items() if STATUS.get(c) == "timeout"]
    if functions:
        names = [n for n in names if any(fnmatch.fnmatchcase(n, f) for f in functions)]
    return sorted(n for n in names if not any(fnmatch.fnmatchcase(n, f) for f in skip))


def check_timeouts(folder: Path, spec: dict[str, Any], config: dict[str, Any], limit_s: float) -> Counter:
    """Run the tests of every mutant the last run stopped as hanging again, each in a fresh process (mutmut forks
    its workers, and a test run forked from a process that holds threads can stall), with `limit_s` seconds of wall
    time; record a failing run as killed and a passing one as survived in mutmut's results, and keep the timeout of
    a run that still hangs. Returns how many of each."""
    stats = json.loads((folder / "mutants" / "mutmut-stats.json").read_text())
    tests_by_function = stats["tests_by_mangled_function_name"]
    pytest_args = list(config["tool"]["mutmut"].get("pytest_add_cli_args", []))
    wanted = set(timed_out(folder, spec))
    outcome: Counter = Counter()
    for meta in sorted((folder / "mutants").rglob("*.py.meta")):
        data = json.loads(meta.read_text())
        names = [n for n in data["exit_code_by_key"] if n in wanted]
        for name in names:
            tests = tests_by_function.get(name.rsplit("__mutmut_", 1)[0], [])
            env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
            env.update(PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=str(folder / "mutants"), MUTANT_UNDER_TEST=name)
            command = [sys.executable, "-m", "pytest", "-x", "-q", *pytest_args, *tests]
            try:
                code = subprocess.run(command, cwd=folder / "mutants", env=env, capture_output=True, timeout=limit_s)
            except subprocess.TimeoutExpired:
                outcome["timeout"] += 1
                continue
            if code.returncode in (0, 1):  # passed: the mutant survives; a test failed: killed
                data["exit_code_by_key"][name] = code.returncode
                outcome["survived" if code.returncode == 0 else "killed"] += 1
            else:
                outcome[f"pytest exit {code.returncode}"] += 1
        if names:
            meta.write_text(json.dumps(data, indent=4))
    return outcome


def changed_since_last_run(folder: Path, spec: dict[str, Any]) -> bool:
    """Whether a module of the group is newer than its mutated copy: mutmut would then measure coverage on the
    stale copy, whose lines are not the module's, so only a fresh run is right."""
    for pattern in spec["mutate"]:
        for source in ROOT.glob(pattern):
            copy = folder / "mutants" / source.relative_to(ROOT)
            if not copy.exists() or source.stat().st_mtime > copy.stat().st_mtime:
                return True
    return False


def module_of(mutant: str) -> str:
    """`hf_landscape.directions.random.x__sqrt__mutmut_3` -> `hf_landscape/directions/random.py`."""
    return mutant.split(".x")[0].replace(".", "/") + ".py"


def print_rows(rows: list[dict[str, Any]], *, survivors: bool) -> None:
    print(f"{'module':44} {'mutants':>7} {'killed':>6} {'timeout':>7} {'survived':>8} {'equiv.':>6} {'score':>7}")
    for r in rows:
        print(
            f"{r['module']:44} {r['mutants']:7d} {r['killed']:6d} {r['timeout']:7d} {r['survived']:8d} "
            f"{r['equivalent']:6d} {100 * r['score']:6.1f}%"
        )
        if r["no tests"] or r["not checked"]:
            print(f"    ({r['no tests']} with no test, {r['not checked']} not checked)")
        if survivors:
            for name in r["survivors"]:
                print(f"    survived: {name}")


def print_markdown(rows: list[dict[str, Any]], equivalent: dict[str, list[str]]) -> None:
    """The score table and the equivalent mutants, for docs/testing.md."""
    print("| module | group | mutants run | killed | survived | of which equivalent | score |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        killed = r["killed"] + r["timeout"]
        survived = r["survived"]
        score = "no mutant scored" if math.isnan(r["score"]) else f"{100 * r['score']:.1f}%"
        print(
            f"| `{r['module']}` | {r['group']} | {killed + survived} | {killed} | {survived} | {r['equivalent']} | {score} |"
        )
    counted = {r["module"] for r in rows}
    print()
    for reason, names in equivalent.items():
        names = [n for n in names if module_of(n) in counted]
        if names:
            print(f"- **{reason}** ({len(names)}): " + ", ".join(f"`{n.removeprefix('hf_landscape.')}`" for n in names))


def run_group(folder: Path, names: list[str], max_children: int) -> int:
    """`mutmut run` in the group's folder; its output goes to `run.log` there."""
    command = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children), *names]
    # Tests that start Python processes (a SIGKILL mid-grid, torchrun) import the mutated package there too.
    (folder / "mutants").mkdir(exist_ok=True)
    path = os.pathsep.join(p for p in (str(folder / "mutants"), os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=path)
    # One thread per test run: mutmut stops a mutant after a CPU-time limit, and a thread pool waiting for a thread
    # that other processes keep off the cores spins, spending that limit without doing work (a false timeout).
    env.update(OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"), MKL_NUM_THREADS=env.get("MKL_NUM_THREADS", "1"))
    with open(folder / "run.log", "ab") as log:
        return subprocess.run(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT).returncode


def main(argv: list[str] | None = None) -> int:
    config = settings()
    mutation = config["tool"]["hf_landscape"]["mutation"]
    groups: dict[str, dict[str, Any]] = mutation["groups"]
    # [tool.hf_landscape.mutation.equivalent]: reason = [mutant names]
    equivalent = {name: reason for reason, names in mutation.get("equivalent", {}).items() for name in names}
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("groups", nargs="*", help=f"groups to run (default: all of {list(groups)})")
    parser.add_argument("--survivors", action="store_true", help="rerun only the last run's surviving mutants")
    parser.add_argument(
        "--unjudged",
        action="store_true",
        help="rerun only the last run's surviving mutants that are not listed as equivalent",
    )
    parser.add_argument(
        "--timeouts",
        action="store_true",
        help="rerun the last run's survivors and the mutants it stopped as hanging (a test run slowed by a busy "
        "machine is stopped too, and would count as killed)",
    )
    parser.add_argument(
        "--check-timeouts",
        type=float,
        metavar="SECONDS",
        help="run the tests of each mutant stopped as hanging again in a fresh process with this wall-time limit, "
        "and record it as killed or survived (run nothing else)",
    )
    parser.add_argument("--resume", action="store_true", help="go on with the mutants the last run left unchecked")
    parser.add_argument("--summary", action="store_true", help="print the last runs' scores, run nothing")
    parser.add_argument(
        "--show", action="store_true", help="print the diff of every surviving mutant (implies --summary)"
    )
    parser.add_argument(
        "--markdown", action="store_true", help="print the scores and the equivalent mutants as Markdown"
    )
    parser.add_argument("--max-children", type=int, default=1, help="mutants tested at once (default 1)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.groups) - set(groups))
    if unknown:
        parser.error(f"unknown groups {unknown}; the groups are {list(groups)}")
    chosen = args.groups or list(groups)
    args.survivors |= args.timeouts or args.unjudged
    args.summary |= args.show or args.markdown
    if args.check_timeouts:
        for group in chosen:
            found = check_timeouts(WORK / group, groups[group], config, args.check_timeouts)
            print(f"{group}: mutants stopped as hanging, run again in a fresh process: {dict(found)}")
        args.summary = True
    rows = []
    for group in chosen:
        folder = WORK / group
        spec = groups[group]
        if not args.summary:
            names: list[str] = list(spec.get("functions", []))
            if (args.survivors or args.resume) and changed_since_last_run(folder, spec):
                print(f"{group}: a module changed since the last run; running the whole group again")
                args_survivors = False
            else:
                args_survivors = args.survivors
            if args_survivors:
                names = [n for r in summarize(group, folder, {}, spec) for n in r["survivors"]]
                names = [n for n in names if n not in equivalent] if args.unjudged else names
                names += timed_out(folder, spec) if args.timeouts else []
                if not names:
                    print(f"{group}: no survivors to rerun")
                    rows += summarize(group, folder, equivalent, spec)
                    continue
            resume = args.resume and not changed_since_last_run(folder, spec)
            folder = prepare(group, groups[group], config, fresh=not (args_survivors or resume))
            start = time.monotonic()
            code = run_group(folder, names, args.max_children)
            print(f"{group}: mutmut exited {code} after {time.monotonic() - start:.0f} s (log: {folder / 'run.log'})")
        rows += summarize(group, folder, equivalent, spec)
    summary = WORK / "summary.json"
    earlier = json.loads(summary.read_text()) if summary.exists() else []
    rows = [r for r in earlier if r["group"] not in chosen and r["group"] in groups] + rows
    rows.sort(key=lambda r: list(groups).index(r["group"]))
    if args.markdown:
        print_markdown(rows, mutation.get("equivalent", {}))
        return 0
    print_rows(rows, survivors=not args.show)
    groups_shown = {r["group"] for r in rows}
    surviving = {n for g in groups_shown for r in summarize(g, WORK / g, {}, groups[g]) for n in r["survivors"]}
    modules = {r["module"] for r in rows}
    stale = sorted(n for n in equivalent if module_of(n) in modules and n not in surviving)
    if stale:
        print(f"{len(stale)} mutants listed as equivalent did not survive (or no longer exist); update the list:")
        for name in stale:
            print(f"    {name}")
    summary.parent.mkdir(parents=True, exist_ok=True)
    summary.write_text(json.dumps(rows, indent=1))
    if args.show:
        for r in rows:
            if r["group"] in chosen:
                for name in r["survivors"]:
                    show = [sys.executable, "-m", "mutmut", "show", name]
                    print(subprocess.run(show, cwd=WORK / r["group"], capture_output=True, text=True).stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
