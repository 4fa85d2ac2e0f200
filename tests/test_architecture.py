"""The house has no back edges: lower rooms never import higher ones (DEVELOPERS.md rule 10)."""

import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOMS = ("configs", "models", "losses", "input_pipeline", "methods", "evaluators", "export", "train")
LEAVES = ("parallel", "tokenization", "checkpointing", "records")
# room -> the project's top-level packages it may not import.
FORBIDDEN = {room: {"train"} for room in ("methods", "models", "losses", "input_pipeline", "evaluators", "export")}
FORBIDDEN["export"] |= {"input_pipeline", "methods", "evaluators"}
FORBIDDEN["models"] |= {"losses", "methods", "input_pipeline", "evaluators", "export"}
FORBIDDEN["losses"] |= {"models", "methods", "input_pipeline", "evaluators", "export"}
FORBIDDEN["input_pipeline"] |= {"methods", "evaluators", "export"}
FORBIDDEN["evaluators"] |= {"methods", "export"}
FORBIDDEN["methods"] |= {"evaluators", "export"}
for leaf in LEAVES:  # leaves import no other project room
  FORBIDDEN[leaf] = set(ROOMS + LEAVES) - {leaf}


def imports_of(package: str) -> list[tuple[str, int, str]]:
  """(file, line, imported top-level package) of every absolute import in a package."""
  found = []
  for root, _, files in os.walk(os.path.join(REPO, package)):
    for name in (f for f in files if f.endswith(".py")):
      path = os.path.join(root, name)
      for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.Import):
          modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
          modules = [node.module]
        else:
          continue
        found += [(os.path.relpath(path, REPO), node.lineno, m.split(".")[0]) for m in modules]
  return found


def test_no_room_imports_a_room_above_it():
  back_edges = [
    f"{path}:{line} imports {module}"
    for room, forbidden in FORBIDDEN.items()
    for path, line, module in imports_of(room)
    if module in forbidden
  ]
  assert not back_edges, "\n".join(back_edges)


def test_only_main_and_tests_import_train():
  users = {path for room in ROOMS + LEAVES if room != "train" for path, _, m in imports_of(room) if m == "train"}
  assert not users, users
