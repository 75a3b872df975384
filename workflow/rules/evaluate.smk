rule evaluate_variant:
    """Predictions and metrics of one model (a variant or a fold model) on its validation and the
    test split; its model card."""
    input:
        model="results/models/{model}/model.pt",
        summary="results/models/{model}/train_summary.json",
        index="results/preprocess/index.parquet",
        store=model_store,
        split=model_split,
        dataset="results/download/dataset.json",
        preprocess=model_preprocessing,
    output:
        predictions="results/evaluate/{model}/predictions.parquet",
        metrics="results/evaluate/{model}/metrics.json",
        card="results/models/{model}/model_card.json",
    log:
        "results/logs/evaluate/{model}.log",
    benchmark:
        "results/benchmarks/evaluate/{model}.tsv"
    conda:
        "../../envs/boneage.yaml"
    threads: model_threads(4)
    resources:
        mem_mb=8000,
        runtime=30,
        gpu=gpus,
        resident=RESIDENT,
    params:
        tta="--tta" if config["evaluate"]["tta"] else "",
        box_shift=config["evaluate"]["box_shift"],
        bias="--bias-correction" if config["evaluate"]["bias_correction"] else "",
        thresholds=stage_thresholds(),
        level=config["evaluate"]["interval_level"],
        bootstrap=bootstrap_args(),
        stability=stability_args(),
        device=config["device"],
    shell:
        "python -m boneage.evaluate --model {input.model} --index {input.index} --store {input.store} "
        "--resident {resources.resident} --split {input.split} "
        "--predictions {output.predictions} --metrics {output.metrics} --model-card {output.card} "
        "--dataset {input.dataset} --preprocess-summary {input.preprocess} "
        "--train-summary {input.summary} {params.tta} --box-shift {params.box_shift} {params.bias} "
        "--stage-thresholds {params.thresholds} --interval-level {params.level} {params.bootstrap} "
        "{params.stability} --device {params.device} --threads {threads} > {log} 2>&1"


rule crossval:
    """A variant's fold models: out-of-fold predictions on the train+val pool, their mean on test."""
    input:
        predictions=fold_files("results/evaluate/{model}/predictions.parquet"),
        metrics=fold_files("results/evaluate/{model}/metrics.json"),
    output:
        predictions="results/evaluate/{variant}_folds/predictions.parquet",
        metrics="results/evaluate/{variant}_folds/metrics.json",
    log:
        "results/logs/crossval/{variant}.log",
    benchmark:
        "results/benchmarks/crossval/{variant}_folds.tsv"
    conda:
        "../../envs/boneage.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        folds=lambda w, input: " ".join(
            f"--fold {p} {m}" for p, m in zip(input.predictions, input.metrics)
        ),
        thresholds=stage_thresholds(),
        level=config["evaluate"]["interval_level"],
        bootstrap=bootstrap_args(),
    shell:
        "python -m boneage.crossval --variant {wildcards.variant} {params.folds} "
        "--predictions {output.predictions} --metrics {output.metrics} "
        "--stage-thresholds {params.thresholds} --interval-level {params.level} {params.bootstrap} "
        "> {log} 2>&1"


rule seeds:
    """A variant's seed models (repeats): the spread across seeds and the seed ensemble."""
    input:
        predictions=group_files("results/evaluate/{model}/predictions.parquet"),
        metrics=group_files("results/evaluate/{model}/metrics.json"),
    output:
        predictions="results/evaluate/{variant}_{group}/predictions.parquet",
        metrics="results/evaluate/{variant}_{group}/metrics.json",
    log:
        "results/logs/seeds/{variant}_{group}.log",
    benchmark:
        "results/benchmarks/seeds/{variant}_{group}.tsv"
    wildcard_constraints:
        group="seeds",
    conda:
        "../../envs/boneage.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        members=lambda w, input: " ".join(
            f"--member {variant_spec(config, w.variant)['seed'] + k} {p} {m}"
            for k, (p, m) in enumerate(zip(input.predictions, input.metrics))
        ),
        thresholds=stage_thresholds(),
        level=config["evaluate"]["interval_level"],
        bootstrap=bootstrap_args(),
    shell:
        "python -m boneage.seeds --variant {wildcards.variant} {params.members} "
        "--predictions {output.predictions} --metrics {output.metrics} "
        "--stage-thresholds {params.thresholds} --interval-level {params.level} {params.bootstrap} "
        "> {log} 2>&1"


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
        bootstrap=bootstrap_args(),
    shell:
        "python -m boneage.ensemble {params.members} --predictions {output.predictions} --metrics {output.metrics} "
        "--weighting {params.weighting} {params.bias} --stage-thresholds {params.thresholds} "
        "--interval-level {params.level} {params.bootstrap} > {log} 2>&1"


rule evaluate:
    """Target: every variant (and the ensemble, when configured) evaluated."""
    input:
        expand("results/evaluate/{variant}/metrics.json", variant=MODELS + COMBINED),
        ["results/evaluate/ensemble/metrics.json"] if ENSEMBLE else [],
