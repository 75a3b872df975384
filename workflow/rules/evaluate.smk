rule evaluate_variant:
    """Predictions and metrics of one variant on validation and test; its model card."""
    input:
        model="results/models/{variant}/model.pt",
        summary="results/models/{variant}/train_summary.json",
        index="results/preprocess/index.parquet",
        images="results/preprocess/images",
        split="results/split/split.csv",
        dataset="results/download/dataset.json",
        preprocess="results/preprocess/preprocess_summary.json",
    output:
        predictions="results/evaluate/{variant}/predictions.parquet",
        metrics="results/evaluate/{variant}/metrics.json",
        card="results/models/{variant}/model_card.json",
    log:
        "results/logs/evaluate/{variant}.log",
    benchmark:
        "results/benchmarks/evaluate/{variant}.tsv"
    conda:
        "../../envs/boneage.yaml"
    threads: 4
    resources:
        mem_mb=8000,
        runtime=30,
        gpu=gpus,
    params:
        tta="--tta" if config["evaluate"]["tta"] else "",
        bias="--bias-correction" if config["evaluate"]["bias_correction"] else "",
        thresholds=stage_thresholds(),
        level=config["evaluate"]["interval_level"],
        device=config["device"],
    shell:
        "python -m boneage.evaluate --model {input.model} --index {input.index} --split {input.split} "
        "--predictions {output.predictions} --metrics {output.metrics} --model-card {output.card} "
        "--dataset {input.dataset} --preprocess-summary {input.preprocess} "
        "--train-summary {input.summary} {params.tta} {params.bias} "
        "--stage-thresholds {params.thresholds} --interval-level {params.level} "
        "--device {params.device} --threads {threads} > {log} 2>&1"


rule ensemble:
    """Weighted mean of the members' predictions, weights chosen on validation."""
    input:
        predictions=expand(
            "results/evaluate/{variant}/predictions.parquet", variant=ENSEMBLE
        ),
        metrics=expand("results/evaluate/{variant}/metrics.json", variant=ENSEMBLE),
    output:
        predictions="results/evaluate/ensemble/predictions.parquet",
        metrics="results/evaluate/ensemble/metrics.json",
    log:
        "results/logs/ensemble/ensemble.log",
    benchmark:
        "results/benchmarks/ensemble/ensemble.tsv"
    conda:
        "../../envs/boneage.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        members=lambda w, input: " ".join(
            f"--member {name} {p} {m}"
            for name, p, m in zip(ENSEMBLE, input.predictions, input.metrics)
        ),
        weighting=config["ensemble"]["weighting"],
        bias="--bias-correction" if config["ensemble"]["bias_correction"] else "",
        thresholds=stage_thresholds(),
        level=config["evaluate"]["interval_level"],
    shell:
        "python -m boneage.ensemble {params.members} --predictions {output.predictions} --metrics {output.metrics} "
        "--weighting {params.weighting} {params.bias} --stage-thresholds {params.thresholds} "
        "--interval-level {params.level} > {log} 2>&1"


rule evaluate:
    """Target: every variant (and the ensemble, when configured) evaluated."""
    input:
        expand("results/evaluate/{variant}/metrics.json", variant=MODELS),
        ["results/evaluate/ensemble/metrics.json"] if ENSEMBLE else [],
