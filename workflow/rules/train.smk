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
    """Train one model: a variant (results/models/{variant}) or one of its fold models
    (results/models/{variant}/fold{k}, split.folds); resumes from its checkpoints/last.pt.
    """
    input:
        spec=model_spec,
        index="results/preprocess/index.parquet",
        images="results/preprocess/images",
        split=model_split,
    output:
        model="results/models/{model}/model.pt",
        history="results/models/{model}/history.csv",
        summary="results/models/{model}/train_summary.json",
    log:
        "results/logs/train/{model}.log",
    benchmark:
        "results/benchmarks/train/{model}.tsv"
    conda:
        "../../envs/boneage.yaml"
    threads: 8
    resources:
        mem_mb=16000,
        runtime=lambda wildcards, attempt: config["train_runtime_minutes"] * attempt,
        gpu=gpus,
    params:
        device=config["device"],
        variant=model_variant,
    shell:
        "python -m boneage.train --variant {params.variant} --spec {input.spec} "
        "--index {input.index} --split {input.split} --out-dir results/models/{wildcards.model} "
        "--device {params.device} --threads {threads} > {log} 2>&1"


rule train:
    """Target: every configured variant trained."""
    input:
        expand("results/models/{variant}/model.pt", variant=MODELS),
        [f"results/models/{f}/model.pt" for m in MODELS for f in fold_models(m)],
