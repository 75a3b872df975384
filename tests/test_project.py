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
    dev_only = {"snakemake", "snakemake-executor-plugin-slurm", "snakefmt", "pytest", "hypothesis"}
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


def _rulegraph_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("rulegraph", REPO / "docs" / "rulegraph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_rule_graph_in_the_docs_is_the_workflows():
    rulegraph = _rulegraph_module()
    demo, full = rulegraph.graphs()
    assert {"download", "preprocess", "split", "train_variant", "evaluate_variant", "report"} <= demo[0]
    (rules, edges), dashed = rulegraph.drawn(rulegraph.FIGURE.read_text())
    stale = "docs/rulegraph.svg is stale: run `.venv/bin/python docs/rulegraph.py` (needs Graphviz)"
    assert rules == full[0], f"{stale}; rules {sorted(rules ^ full[0])} differ"
    assert edges == full[1], f"{stale}; edges {sorted(edges ^ full[1])} differ"
    assert dashed == full[0] - demo[0], f"{stale}; the optional rules are {sorted(full[0] - demo[0])}"


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_the_readme_is_short_and_every_link_in_it_and_the_docs_resolves():
    readme = REPO / "README.md"
    assert len(readme.read_text().splitlines()) <= 200, "README.md: keep it to 200 lines; move detail to docs/"
    pages = [readme, *sorted((REPO / "docs").glob("*.md"))]
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            assert file.exists(), f"{page.relative_to(REPO)}: link {target} does not resolve"
            if anchor and file.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", file.read_text(), flags=re.M)
                assert anchor in {_slug(h) for h in headings}, f"{page.relative_to(REPO)}: no heading #{anchor}"


def _readme_commands() -> list[tuple[str, str]]:
    """(the block's needs-marker or '', command) for every command of the README's bash blocks."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S):
        needs = " ".join(re.findall(r"# needs: ([^\n]+)", block))
        for command in block.replace("\\\n", " ").splitlines():
            command = command.split("  #")[0].strip()
            if command and not command.startswith("#"):
                out.append((needs, command))
    return out


def test_every_readme_command_runs_or_is_marked_with_what_it_needs(tmp_path):
    """The set-up and test commands are what CI runs (.ci/run); every snakemake command is planned (a dry
    run, with the shared RSNA copy for data_dir); every python -m command exists and takes the options
    shown. A command that needs what a test cannot have (a GPU, a cluster, your films) says so."""
    from .conftest import TRAIN_299

    ci = (REPO / ".ci" / "run").read_text()
    commands = _readme_commands()
    assert commands
    for needs, command in commands:
        words = command.replace("./setup.sh && ", "").split()
        if command.startswith("./setup.sh"):
            assert "./setup.sh" in ci and (" ".join(words) in ci or ".venv/bin/snakemake" in words), command
        if ".venv/bin/snakemake" in words:
            args = words[words.index(".venv/bin/snakemake") + 1:]
            if any(w.startswith("data_dir=/data/") for w in args):
                assert needs, f"README: {command!r} needs data; mark its block '# needs: ...'"
                if not TRAIN_299.is_dir():
                    continue
                args = [f"data_dir={TRAIN_299}" if w.startswith("data_dir=/data/") else w for w in args]
            args = [str(REPO / w) if w.startswith(("configs/", "profiles/")) else w for w in args]
            proc = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
                                   "--directory", str(tmp_path), "-n", *args], capture_output=True, text=True)
            assert proc.returncode == 0, f"README: {command!r} does not plan:\n{proc.stderr[-2000:]}"
        elif "-m" in words and words[words.index("-m") + 1].startswith("boneage."):
            assert needs, f"README: {command!r} needs a bundle and films; mark its block '# needs: ...'"
            module = words[words.index("-m") + 1]
            proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True)
            assert proc.returncode == 0, f"README: {module} --help failed: {proc.stderr[-1000:]}"
            for option in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", command):
                assert option in proc.stdout, f"README: {module} has no option {option}"
