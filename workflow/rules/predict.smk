rule bundle_variant:
    """Model bundle of one variant: weights, preprocessing, corrections, interval, card."""
    input:
        model="results/models/{variant}/model.pt",
        metrics="results/evaluate/{variant}/metrics.json",
        preprocess=model_preprocessing,
        card="results/models/{variant}/model_card.json",
    output:
        directory("results/bundles/{variant}"),
    log:
        "results/logs/bundle/{variant}.log",
    benchmark:
        "results/benchmarks/bundle/{variant}.tsv"
    conda:
        "../../envs/boneage.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "python -m boneage.export variant --model {input.model} --metrics {input.metrics} "
        "--preprocess-summary {input.preprocess} --model-card {input.card} --out-dir {output} "
        "> {log} 2>&1"


rule bundle_ensemble:
    """Model bundle of the ensemble: weights, corrections and a copy of each member's bundle."""
    input:
        members=expand("results/bundles/{variant}", variant=ENSEMBLE),
        metrics="results/evaluate/ensemble/metrics.json",
    output:
        directory("results/bundles/ensemble"),
    log:
        "results/logs/bundle/ensemble.log",
    benchmark:
        "results/benchmarks/bundle/ensemble.tsv"
    conda:
        "../../envs/boneage.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        members=lambda w, input: " ".join(
            f"--member {name} {path}" for name, path in zip(ENSEMBLE, input.members)
        ),
    shell:
        "python -m boneage.export ensemble {params.members} --metrics {input.metrics} "
        "--out-dir {output} > {log} 2>&1"


rule bundle_group:
    """Model bundle of a variant's fold ensemble ({variant}_folds) or seed ensemble ({variant}_seeds):
    each of its models' bundles, equally weighted."""
    input:
        models=group_files("results/models/{model}/model.pt"),
        member_metrics=group_files("results/evaluate/{model}/metrics.json"),
        cards=group_files("results/models/{model}/model_card.json"),
        metrics="results/evaluate/{variant}_{group}/metrics.json",
        preprocess=model_preprocessing,
    output:
        directory("results/bundles/{variant}_{group}"),
    log:
        "results/logs/bundle/{variant}_{group}.log",
    benchmark:
        "results/benchmarks/bundle/{variant}_{group}.tsv"
    wildcard_constraints:
        group="folds|seeds",
    conda:
        "../../envs/boneage.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        members=lambda w, input: " ".join(
            f"--member {name} {' '.join(files)}"
            for name, files in zip(
                group_member_names(w),
                zip(input.models, input.member_metrics, input.cards),
            )
        ),
    shell:
        "python -m boneage.export average {params.members} --metrics {input.metrics} "
        "--preprocess-summary {input.preprocess} --out-dir {output} > {log} 2>&1"


rule bundles:
    """Target: a bundle per variant (and the ensemble, when configured)."""
    input:
        BUNDLES,


rule predict:
    """New radiographs (config predict.inputs) through a bundle -> results/predict/."""
    input:
        bundle=predict_bundle(),
    output:
        csv="results/predict/predictions.csv",
        table="results/predict/predictions.parquet",
        summary="results/predict/summary.json",
        images=directory("results/predict/images"),
    log:
        "results/logs/predict/predict.log",
    benchmark:
        "results/benchmarks/predict/predict.tsv"
    conda:
        "../../envs/boneage.yaml"
    threads: 4
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=gpus,
    params:
        inputs=predict_inputs(),
        csv=f"--csv {config['predict']['csv']}" if config["predict"]["csv"] else "",
        device=config["device"],
    shell:
        "python -m boneage.predict {params.inputs} --bundle {input.bundle} {params.csv} "
        "--out-dir results/predict --device {params.device} --threads {threads} --keep-going "
        "> {log} 2>&1"


rule external_test:
    """The external labelled test set (config external_test) through one bundle."""
    input:
        bundle="results/bundles/{bundle}",
    output:
        csv="results/external/{bundle}/predictions.csv",
        summary="results/external/{bundle}/summary.json",
    log:
        "results/logs/external/{bundle}.log",
    benchmark:
        "results/benchmarks/external/{bundle}.tsv"
    wildcard_constraints:
        bundle="|".join(sorted(BUNDLE_NAMES, key=len, reverse=True)),
    conda:
        "../../envs/boneage.yaml"
    threads: 4
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=gpus,
    params:
        images=str(EXTERNAL.image_dir) if EXTERNAL else "",
        labels=str(EXTERNAL.labels_csv) if EXTERNAL else "",
        thresholds=stage_thresholds(),
        bootstrap=bootstrap_args(),
        device=config["device"],
    shell:
        "python -m boneage.predict {params.images:q} --csv {params.labels:q} --bundle {input.bundle} "
        "--stage-thresholds {params.thresholds} {params.bootstrap} "
        "--out-dir results/external/{wildcards.bundle} --device {params.device} --threads {threads} "
        "--keep-going > {log} 2>&1"


rule calibrate_bundle:
    """A bundle fitted to local labelled films (config calibrate): per-sex linear calibration shrunk
    toward no change, cross-fitted before/after figures, local interval -> a new bundle.
    """
    input:
        bundle="results/bundles/{bundle}",
        csv=calibrate_local,
    output:
        bundle=directory("results/calibrate/{bundle}/bundle"),
        parent=directory("results/calibrate/{bundle}/parent"),
        json="results/calibrate/{bundle}/calibration.json",
        html="results/calibrate/{bundle}/calibration.html",
    log:
        "results/logs/calibrate/{bundle}.log",
    benchmark:
        "results/benchmarks/calibrate/{bundle}.tsv"
    wildcard_constraints:
        bundle="|".join(sorted(BUNDLE_NAMES, key=len, reverse=True)),
    conda:
        "../../envs/boneage.yaml"
    threads: 4
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=gpus,
    params:
        images=" ".join(shlex.quote(str(p)) for p in config["calibrate"]["images"]),
        min_films=config["calibrate"]["min_films_per_sex"],
        folds=config["calibrate"]["folds"],
        seed=config["calibrate"]["seed"],
        bootstrap=bootstrap_args(),
        device=config["device"],
    shell:
        "python -m boneage.calibrate --bundle {input.bundle} --images {params.images} --csv {input.csv:q} "
        "--min-films-per-sex {params.min_films} --folds {params.folds} "
        "--seed {params.seed} {params.bootstrap} --out-dir results/calibrate/{wildcards.bundle} "
        "--device {params.device} --threads {threads} > {log} 2>&1"


rule calibrate:
    """Target: the configured bundle calibrated to the local films (config calibrate)."""
    input:
        lambda w: f"results/calibrate/{calibrate_bundle_name()}/bundle",
