"""Runs the "Writing a reward plugin" documentation, so the docs and the code cannot drift.

Every fenced block of the section is used: the module block becomes a file on the Python path,
the YAML reward list and the entry point are resolved, and the checking block is executed.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

from dllm_rl.rewards.registry import ENTRY_POINT_GROUP, get_reward, resolve_rewards

DOC = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "Writing a reward plugin"


def section_blocks(path, heading: str) -> list[tuple[str, str]]:
    """``(language, code)`` of each fenced block under ``## heading``, up to the next ``## ``."""
    text = path.read_text()
    start = text.index(f"## {heading}\n")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end != -1 else len(text)]
    return re.findall(r"^```(\w+)\n(.*?)^```", body, flags=re.DOTALL | re.MULTILINE)


def test_reward_plugin_docs_run(tmp_path, monkeypatch):
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    blocks = section_blocks(DOC, SECTION)
    python = [code for lang, code in blocks if lang == "python"]
    (yaml_block,) = [code for lang, code in blocks if lang == "yaml"]
    (toml_block,) = [code for lang, code in blocks if lang == "toml"]
    module_code, check_code = python

    # The module: its first line names the file.
    filename = re.match(r"# (\w+)\.py\n", module_code).group(1)
    (tmp_path / f"{filename}.py").write_text(module_code)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, filename, raising=False)

    # The recipe's reward list resolves.
    specs = resolve_rewards(yaml.safe_load(yaml_block)["rewards"])
    assert [s.weight for s in specs] == [1.0, 0.5]

    # The entry point, installed as a package's metadata would be, resolves to the same function.
    entry_points = tomllib.loads(toml_block)["project"]["entry-points"][ENTRY_POINT_GROUP]
    dist_info = tmp_path / "my_plugin-0.1.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: my-plugin\nVersion: 0.1\n")
    lines = [f"{name} = {target}" for name, target in entry_points.items()]
    (dist_info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n" + "\n".join(lines))
    for name, target in entry_points.items():
        assert get_reward(name) is get_reward(target) is specs[1].fn

    # The checking block runs as written (its asserts included).
    exec(compile(check_code, str(DOC), "exec"), {"__name__": "reward_plugin_docs"})
    monkeypatch.delitem(sys.modules, filename, raising=False)
