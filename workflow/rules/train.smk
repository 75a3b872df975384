rule plan:
    """The variant's resolved training settings, results/models/{variant}/spec.json, read by train."""
    output:
        "results/models/{variant}/spec.json",
    log:
        "results/logs/plan/{variant}.log",
    conda:
        "../../envs/boneage.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        settings=spec_json,
    shell:
        "python -m boneage.plan --variant {wildcards.variant} --settings {params.settings:q} "
        "--out {output} > {log} 2>&1"


rule train_variant:
    """Train one model variant; resumes from results/models/{variant}/checkpoints/last.pt."""
    input:
        spec="results/models/{variant}/spec.json",
        index="results/preprocess/index.parquet",
        images="results/preprocess/images",
        split="results/split/split.csv",
    output:
        model="results/models/{variant}/model.pt",
        history="results/models/{variant}/history.csv",
        summary="results/models/{variant}/train_summary.json",
    log:
        "results/logs/train/{variant}.log",
    benchmark:
        "results/benchmarks/train/{variant}.tsv"
    conda:
        "../../envs/boneage.yaml"
    threads: 8
    resources:
        mem_mb=16000,
        runtime=lambda wildcards, attempt: config["train_runtime_minutes"] * attempt,
        gpu=gpus,
    params:
        device=config["device"],
    shell:
        "python -m boneage.train --variant {wildcards.variant} --spec {input.spec} "
        "--index {input.index} --split {input.split} --out-dir results/models/{wildcards.variant} "
        "--device {params.device} --threads {threads} > {log} 2>&1"


rule train:
    """Target: every configured variant trained."""
    input:
        expand("results/models/{variant}/model.pt", variant=MODELS),
