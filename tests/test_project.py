"""Project hygiene a user relies on: clean lint and format, one set of pins, documented config."""

from __future__ import annotations

import re
import subprocess
import sys

import yaml

from .conftest import REPO


def _pins(lines) -> dict[str, str]:
    pins = {}
    for line in lines:
        line = line.split("#")[0].strip()
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def test_conda_env_pins_match_requirements():
    req = _pins((REPO / "requirements.txt").read_text().splitlines())
    env = yaml.safe_load((REPO / "envs" / "boneage.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    conda_pins = _pins(pip)
    dev_only = {"snakemake", "snakemake-executor-plugin-slurm", "snakefmt", "pytest"}
    assert conda_pins == {k: v for k, v in req.items() if k not in dev_only}
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    # the env pins the Python the project is tested on; the tests themselves run on any 3.11+
    major, minor = map(int, python.removeprefix("python=").split("."))
    assert (major, minor) >= (3, 11) and sys.version_info >= (3, 11)


def test_snakemake_lint_is_clean():
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0 and "Congratulations" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_snakefmt_is_clean():
    proc = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "."], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_config_key_has_a_description_and_the_schema_a_default():
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())

    def walk(node, path):
        if "$ref" in node:
            return
        for name, sub in node.get("properties", {}).items():
            assert "description" in sub or "$ref" in sub, f"{path}.{name} has no description"
            walk(sub, f"{path}.{name}")
        for name, sub in node.get("$defs", {}).items():
            walk(sub, f"$defs.{name}")

    walk(schema, "config")
    for name, sub in schema["properties"].items():
        assert "default" in sub, f"config key {name} has no default"
