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
    """Train one model: a variant (results/models/{variant}), one of its fold models
    (results/models/{variant}/fold{k}, split.folds) or of its seed models (results/models/{variant}/seed{k},
    repeats: the variant's seed + k); resumes from its checkpoints/last.pt.
    """
    input:
        spec=model_spec,
        index="results/preprocess/index.parquet",
        store=model_store,
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
    threads: model_threads(8)
    resources:
        mem_mb=16000,
        runtime=train_runtime,
        gpu=gpus,
        resident=RESIDENT,
    params:
        device=config["device"],
        variant=model_variant,
        seed_offset=seed_offset,
    shell:
        "python -m boneage.train --variant {params.variant} --spec {input.spec} "
        "--seed-offset {params.seed_offset} "
        "--index {input.index} --store {input.store} --resident {resources.resident} --split {input.split} "
        "--out-dir results/models/{wildcards.model} --device {params.device} --threads {threads} > {log} 2>&1"


rule train:
    """Target: every configured variant trained (with its fold and seed models)."""
    input:
        expand("results/models/{model}/model.pt", model=trained_models()),
