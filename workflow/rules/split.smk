rule split:
    """Seeded train/val/test split stratified by age bin x sex, written as data; with split.folds, the
    cross-validation folds of the train+val pool and each fold model's split file."""
    input:
        "results/preprocess/index.parquet",
    output:
        split="results/split/split.csv",
        folds=(
            [
                "results/split/folds.csv",
                *expand("results/split/folds/fold{k}.csv", k=range(FOLDS)),
            ]
            if FOLDS
            else []
        ),
        summary=report(
            "results/split/split_summary.csv",
            caption="../report/split.rst",
            category="2. Split",
            labels={"table": "split"},
        ),
    log:
        "results/logs/split/split.log",
    benchmark:
        "results/benchmarks/split/split.tsv"
    conda:
        "../../envs/boneage.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        val=config["split"]["val_fraction"],
        test=config["split"]["test_fraction"],
        age_bin=config["split"]["age_bin_months"],
        seed=config["split"]["seed"],
        split_file=(
            f"--split-file {config['split']['file']}"
            if config["split"]["file"]
            else ""
        ),
        folds=FOLDS,
        folds_file=(
            f"--folds-file {config['split']['folds_file']}"
            if config["split"]["folds_file"]
            else ""
        ),
    shell:
        "python -m boneage.split --index {input} --out {output.split} --val-fraction {params.val} "
        "--test-fraction {params.test} --age-bin-months {params.age_bin} --seed {params.seed} "
        "{params.split_file} --folds {params.folds} {params.folds_file} > {log} 2>&1"
