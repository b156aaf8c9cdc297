"""Quarantine rule names you can grep: each is a literal where it is applied, and documented.

Static reading only (no Spark): every module of the library is parsed with `ast`.

Where a name of `silver.quarantine.rule` comes from, and what is checked there:
- cleanse: `Rule(name, ...)` and every helper named `*_rule` (`parse_rule`, `required_rule`,
  a source's own): the name, the first argument (or `name=`), must be a string literal. A
  helper passes its own first parameter `name` on to `Rule` (or to another `*_rule`); that
  is the only other form accepted, so its callers are checked in turn;
- a rule column written directly (`F.lit("conflicting_duplicate").alias("rule")`): a literal,
  or one of the known pass-throughs of a name checked elsewhere (`PASS_THROUGH`);
- ingest: a broken record is the tuple `(KIND_BROKEN, line, fields, rule, reason, text)`;
  its rule must be a literal. (The IDX reader quarantines nothing: a broken file stops it.)

Every name found must be a row of the README's "Quarantine rules" table, with the stage and
the module(s) ("where") that apply it, and every row of the table must be found in the code.
"""

from __future__ import annotations

import ast
import functools
import re
from collections import defaultdict
from pathlib import Path

import retail_lake

PACKAGE = Path(retail_lake.__file__).resolve().parent
README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "### Quarantine rules"
# Expressions that write the quarantine's `rule` column from a name checked elsewhere:
# (module, source of the aliased expression).
PASS_THROUGH = {
    ("cleansing.py", "F.lit(r.name)"),  # with_errors: a Rule's name (Rule calls are checked)
    ("cleansing.py", "first['rule']"),  # quarantine_rows: the first entry of `_errors`
    ("ingest.py", "F.col('_rule')"),  # ingest_source: the KIND_BROKEN record's rule
}


def _modules(package: Path) -> dict[str, ast.Module]:
    return {
        path.relative_to(package).as_posix(): ast.parse(path.read_text(encoding="utf-8"))
        for path in sorted(package.rglob("*.py"))
        if "demo_data" not in path.parts
    }


def _callee(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _is_rule_builder(name: str) -> bool:
    return name == "Rule" or name.endswith("_rule")


def _name_argument(call: ast.Call) -> ast.expr | None:
    if call.args:
        first = call.args[0]
        return None if isinstance(first, ast.Starred) else first
    return next((k.value for k in call.keywords if k.arg == "name"), None)


def _literal(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _passes_own_name(node: ast.expr | None, function: ast.FunctionDef | None) -> bool:
    """`name` inside `def <x>_rule(name, ...)`: a helper handing its caller's literal on."""
    if function is None or not _is_rule_builder(function.name):
        return False
    params = function.args.posonlyargs + function.args.args
    return (
        isinstance(node, ast.Name)
        and node.id == "name"
        and bool(params)
        and params[0].arg == "name"
    )


def _walk(node: ast.AST, function: ast.FunctionDef | None = None):
    """(node, innermost enclosing function or None) for every node, in source order."""
    yield node, function
    inner = node if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) else function
    for child in ast.iter_child_nodes(node):
        yield from _walk(child, inner)


def collect(package: Path) -> tuple[dict[str, set[tuple[str, str]]], list[str]]:
    """({rule name: {(stage, module)}}, problems as 'module:line: what') of `package`."""
    found: dict[str, set[tuple[str, str]]] = defaultdict(set)
    problems: list[str] = []
    for module, tree in _modules(package).items():
        for node, function in _walk(tree):
            where = f"{module}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Call) and _is_rule_builder(_callee(node)):
                arg = _name_argument(node)
                name = _literal(arg)
                if name is not None:
                    found[name].add(("cleanse", module))
                elif not _passes_own_name(arg, function):
                    problems.append(
                        f"{where}: the rule name of {ast.unparse(node)[:80]} is not a string "
                        "literal (write the name itself, or pass a helper's `name` parameter)"
                    )
            if (
                isinstance(node, ast.Call)
                and _callee(node) == "alias"
                and isinstance(node.func, ast.Attribute)
                and [_literal(a) for a in node.args] == ["rule"]
            ):
                column = node.func.value
                name = (
                    _literal(column.args[0])
                    if isinstance(column, ast.Call) and _callee(column) == "lit" and column.args
                    else None
                )
                stage = "ingest" if module == "ingest.py" else "cleanse"
                if name is not None:
                    found[name].add((stage, module))
                elif (module, ast.unparse(column)) not in PASS_THROUGH:
                    problems.append(
                        f"{where}: the quarantine's rule column is {ast.unparse(column)[:80]}, "
                        "not F.lit of a string literal"
                    )
            if (
                isinstance(node, ast.Tuple)
                and node.elts
                and isinstance(node.elts[0], ast.Name)
                and node.elts[0].id == "KIND_BROKEN"
            ):
                name = _literal(node.elts[3]) if len(node.elts) > 3 else None
                if name is not None:
                    found[name].add(("ingest", module))
                else:
                    problems.append(
                        f"{where}: the rule of a broken record {ast.unparse(node)[:80]} is not "
                        "a string literal"
                    )
    return dict(found), problems


@functools.cache
def _library() -> tuple[dict[str, set[tuple[str, str]]], list[str]]:
    return collect(PACKAGE)


def readme_table() -> dict[str, tuple[str, set[str], int]]:
    """{rule: (stage, {module}, README line)} from the README's "Quarantine rules" table."""
    lines = README.read_text(encoding="utf-8").splitlines()
    assert SECTION in lines, f"README.md has no '{SECTION}' section"
    start = lines.index(SECTION)
    rows: dict[str, tuple[str, set[str], int]] = {}
    in_table = False
    for number, line in enumerate(lines[start + 1 :], start=start + 2):
        if not line.startswith("|"):
            if in_table:
                break
            if line.startswith("#"):
                break
            continue
        in_table = True
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == "rule" or set(cells[0]) <= {"-", ":"}:
            continue
        assert len(cells) == 5, f"README.md:{number}: expected 5 cells, got {len(cells)}"
        rule = cells[0].strip("`")
        assert rule not in rows, f"README.md:{number}: {rule} is listed twice"
        rows[rule] = (cells[1], set(re.findall(r"`([^`]+)`", cells[4])), number)
    assert rows, f"README.md: no table under '{SECTION}'"
    return rows


def test_every_rule_name_is_a_literal():
    _, problems = _library()
    assert not problems, "rule names must be string literals:\n" + "\n".join(problems)


def test_the_readme_lists_every_rule_name_and_only_those():
    found, _ = _library()
    table = readme_table()
    missing = sorted(set(found) - set(table))
    stale = sorted(set(table) - set(found))
    assert not missing, f"rule names missing from README's '{SECTION}' table: {missing}"
    assert not stale, f"README's '{SECTION}' lists names no code applies: {stale}"
    for rule, places in sorted(found.items()):
        stage, modules, number = table[rule]
        stages = {s for s, _ in places}
        assert {stage} == stages, f"README.md:{number}: {rule} has stage {stage}, code {stages}"
        where = {m for _, m in places}
        assert modules == where, f"README.md:{number}: {rule} is applied in {sorted(where)}"


def test_the_collector_finds_every_kind_of_rule():
    """The checks above are not vacuous: each way of naming a rule is still recognised."""
    found, _ = _library()
    assert {"column_count", "unparseable", "undecodable"} <= set(found)  # ingest
    assert "conflicting_duplicate" in found  # F.lit(...).alias("rule")
    assert {"missing_store", "unparseable_store", "invalid_promo"} <= set(found)  # helpers
    assert "negative_sales" in found  # Rule(...)


def test_an_f_string_rule_name_is_reported(tmp_path):
    module = tmp_path / "retail_lake"
    module.mkdir()
    (module / "bad.py").write_text(
        "def flag_rule(name, column):\n"
        "    return Rule(name, column, None, '')\n"
        "def other(column):\n"
        "    return Rule(f'invalid_{column}', column, None, '')\n"
        "RULES = [flag_rule(f'invalid_{c}', c) for c in 'ab']\n"
        "OK = [flag_rule('invalid_a', 'a')]\n"
        "LIT = F.lit('x_' + c).alias('rule')\n"
        "BROKEN = (KIND_BROKEN, 1, None, f'bad_{c}', 'reason', 'text')\n",
        encoding="utf-8",
    )
    found, problems = collect(module)
    assert set(found) == {"invalid_a"}
    assert [p.split(":")[:2] for p in problems] == [
        ["bad.py", "4"],
        ["bad.py", "5"],
        ["bad.py", "7"],
        ["bad.py", "8"],
    ], problems
