"""The agent's import graph has no cycle (TYPE_CHECKING imports count: a cycle there is still a design loop),
and what a role loads is only its own: no OpenCV, dlib or numpy without a camera."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Every agent module ``path`` imports, wherever the import statement is (top, function, TYPE_CHECKING)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        out |= {n for n in names if n in known}
    return out


def agent_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in (ROOT / "agent").rglob("*.py")}
    known = set(files)
    return {m: imports_of(p, known) - {m} for m, p in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return [*stack[stack.index(n) :], n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_agents_import_graph_has_no_cycle() -> None:
    graph = agent_graph()
    assert "agent.agent" in graph and len(graph) > 20
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_nothing_below_the_agent_imports_it() -> None:
    graph = agent_graph()
    users = sorted(m for m, deps in graph.items() if "agent.agent" in deps)
    assert users == [], f"{users} import agent.agent: give them a DeviceContext instead"


def loaded_by(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(__import__('json').dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    return sorted({m.split(".")[0] for m in json.loads(out.stdout.splitlines()[-1])})


HEAVY = {"cv2", "numpy", "dlib", "face_recognition", "mediapipe"}


def test_kiosk_rating_and_camera_less_attendance_roles_load_no_vision_stack() -> None:
    for role in ("kiosk", "rating", "attendance"):
        mods = loaded_by(f"import agent.agent, agent.config, agent.roles.{role}")
        assert HEAVY.isdisjoint(mods), f"the {role} role loads {sorted(HEAVY & set(mods))}"


def test_the_kiosk_role_loads_no_input_driver() -> None:
    """evdev is the rating pad's and the QR scanner's driver; the kiosk has neither."""
    mods = loaded_by("import agent.roles.kiosk")
    assert "evdev" not in mods
