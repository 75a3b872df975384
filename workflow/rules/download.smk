rule download:
    """Make the dataset available (demo: generate it; local: check it; kaggle: fetch it)."""
    input:
        local_labels,
    output:
        "results/download/dataset.json",
    log:
        "results/logs/download/download.log",
    benchmark:
        "results/benchmarks/download/download.tsv"
    conda:
        "../../envs/boneage.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=120,
    params:
        source=config["data_source"],
        data_dir=config["data_dir"] or "",
        demo_n=config["demo"]["n_images"],
        demo_seed=config["demo"]["seed"],
        kaggle_dataset=config["kaggle"]["dataset"],
        images=local_images,
    shell:
        "python -m boneage.download --source {params.source} --out {output} "
        "--data-dir={params.data_dir:q} --work-dir results/data "
        "--demo-n-images {params.demo_n} --demo-seed {params.demo_seed} "
        "--kaggle-dataset {params.kaggle_dataset:q} > {log} 2>&1"
