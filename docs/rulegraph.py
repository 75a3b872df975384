"""Draw docs/rulegraph.svg from the workflow itself: `python docs/rulegraph.py` (needs Graphviz's `dot`).

Two rule graphs come from ``snakemake --rulegraph``: the demo's (``snakemake all`` with config.yaml)
and one with every optional branch switched on (preprocessing shards, a second region of the hand,
cross-validation folds, seed repeats, an ensemble, an external test set, and the ``predict`` and
``calibrate`` targets). The figure draws the second; rules and edges that the demo does not run are
dashed, each optional rule with the config key that switches it on. tests/test_project.py redraws
both graphs and fails when the figure's rules or edges differ from the workflow's.
"""

from __future__ import annotations

import html
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIGURE = REPO / "docs" / "rulegraph.svg"

# What switches each optional rule on (the rules that `snakemake all` does not run on the demo).
OPTIONAL = {
    "preprocess_shard": "preprocess.shards > 1",
    "preprocess_view": "a model's region: wrist | fingers",
    "crossval": "split.folds >= 2",
    "seeds": "repeats > 1",
    "bundle_group": "folds or repeats",
    "ensemble": "ensemble.variants",
    "bundle_ensemble": "ensemble.variants",
    "external_test": "external_test",
    "predict": "snakemake predict",
    "calibrate": "snakemake calibrate",
    "calibrate_bundle": "snakemake calibrate",
}

BRANCHES = """\
repeats: 2
preprocess: {shards: 2}
split: {folds: 3}
models:
  resnet18_wrist: {arch: resnet18, region: wrist}
variants: [resnet18, resnet18_sex, resnet18_wrist]
ensemble: {variants: [resnet18, resnet18_wrist]}
"""

Graph = tuple[set[str], set[tuple[str, str]]]


def rulegraph(*args: str, workdir: Path) -> Graph:
    """(rules, edges upstream -> downstream) of ``snakemake --rulegraph`` with ``args``."""
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
                           "--directory", str(workdir), "--rulegraph", "dot", *args],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"snakemake --rulegraph {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    labels = dict(re.findall(r'^\s*(\d+)\[label = "(\w+)"', proc.stdout, re.M))
    edges = {(labels[a], labels[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", proc.stdout, re.M)}
    return set(labels.values()), edges


def graphs() -> tuple[Graph, Graph]:
    """The demo's rule graph and the graph with every optional branch on."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        demo = rulegraph("all", workdir=tmp / "demo")
        external = tmp / "external"  # an RSNA-layout folder: the label file and the image folder
        (external / "boneage-training-dataset").mkdir(parents=True)
        (external / "boneage-training-dataset.csv").write_text("id,boneage,male\n")
        films = REPO / "tests" / "data"  # any existing files stand for the films; nothing is read
        (tmp / "branches.yaml").write_text(
            BRANCHES + f"external_test: {external}\npredict: {{inputs: [{films}]}}\n"
            f"calibrate: {{images: [{films}], csv: {films / 'train299_hands.csv'}}}\n")
        full = rulegraph("all", "predict", "calibrate", "--configfile", str(tmp / "branches.yaml"),
                         workdir=tmp / "full")
    return demo, full


def implied_edges(edges: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """The edges a -> b that another path a -> ... -> b implies (drawn faint: the figure stays
    readable, yet every input of every rule is in it)."""
    after: dict[str, set[str]] = {}
    for a, b in edges:
        after.setdefault(a, set()).add(b)

    def reachable_without(a: str, b: str) -> bool:  # b from a without the edge a -> b itself
        seen, todo = set(), [n for n in after[a] if n != b]
        while todo:
            node = todo.pop()
            if node == b:
                return True
            if node not in seen:
                seen.add(node)
                todo.extend(after.get(node, ()))
        return False

    return {(a, b) for a, b in edges if reachable_without(a, b)}


def dot(demo: Graph, full: Graph) -> str:
    unknown = full[0] - demo[0] - set(OPTIONAL)
    if unknown:
        raise SystemExit(f"rules {sorted(unknown)} are not run on the demo: add what switches them on to OPTIONAL")
    lines = ["digraph rules {", '  graph [rankdir=TB, bgcolor=white, margin=0.1, nodesep=0.3, ranksep=0.4];',
             '  node [shape=box, style=rounded, fontname="Helvetica", fontsize=11, penwidth=1.5, color="#3b6ea5"];',
             '  edge [color="#7a7a7a", penwidth=1.2, arrowsize=0.7];']
    for rule in sorted(full[0]):
        if rule in demo[0]:
            lines.append(f'  "{rule}";')
        else:
            lines.append(f'  "{rule}" [label=<{rule}<br/><font point-size="9">{html.escape(OPTIONAL[rule])}</font>>, '
                         'style="rounded,dashed", color="#9a9a9a", fontcolor="#555555"];')
    implied = implied_edges(full[1])
    for a, b in sorted(full[1]):
        style = [] if (a, b) in demo[1] else ["style=dashed"]
        style += ['color="#c8c8c8", penwidth=0.8, arrowsize=0.5'] if (a, b) in implied else []
        lines.append(f'  "{a}" -> "{b}"' + (f" [{', '.join(style)}]" if style else "") + ";")
    return "\n".join(lines) + "\n}\n"


def drawn(svg: str) -> tuple[Graph, set[str]]:
    """(rules, edges) drawn in a Graphviz SVG of :func:`dot`, and the rules drawn dashed."""
    text = html.unescape(svg)
    nodes = dict(re.findall(r'<g id="node\d+" class="node">\s*<title>([^<]+)</title>\s*(<path[^>]*>)', text))
    edges = {tuple(t.split("->")) for t in re.findall(r'<g id="edge\d+" class="edge">\s*<title>([^<]+)</title>', text)}
    return (set(nodes), edges), {n for n, path in nodes.items() if "stroke-dasharray" in path}


def main() -> None:
    demo, full = graphs()
    proc = subprocess.run(["dot", "-Tsvg"], input=dot(demo, full), capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"Graphviz's dot failed (apt-get install graphviz): {proc.stderr}")
    FIGURE.write_text(proc.stdout)
    print(f"{FIGURE.relative_to(REPO)}: {len(full[0])} rules ({len(full[0] - demo[0])} optional), {len(full[1])} edges")


if __name__ == "__main__":
    main()
