rule train_variant:
    """Train one model variant; resumes from results/models/{variant}/checkpoints/last.pt."""
    input:
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
        runtime=240,
        gpu=gpus,
    params:
        spec=spec_json,
        device=config["device"],
    shell:
        "python -m boneage.train --variant {wildcards.variant} --spec {params.spec:q} "
        "--index {input.index} --split {input.split} --out-dir results/models/{wildcards.variant} "
        "--device {params.device} --threads {threads} > {log} 2>&1"


rule train:
    """Target: every configured variant trained."""
    input:
        expand("results/models/{variant}/model.pt", variant=MODELS),
