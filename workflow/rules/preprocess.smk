rule preprocess:
    """Hand crop, marker removal, CLAHE and resize of every radiograph; index, rejects and QC. With
    preprocess.shards K > 1: the gather of the K shard jobs' images into the same outputs.
    """
    input:
        dataset="results/download/dataset.json",
        shards=(
            expand("results/preprocess/shards/{shard}", shard=range(SHARDS))
            if SHARDS > 1
            else []
        ),
    output:
        index="results/preprocess/index.parquet",
        images=directory("results/preprocess/images"),
        store="results/preprocess/images.u8",
        store_meta="results/preprocess/images.json",
        rejects=report(
            "results/preprocess/rejects.csv",
            caption="../report/rejects.rst",
            category="1. Preprocessing",
            labels={"table": "rejected rows"},
        ),
        summary="results/preprocess/preprocess_summary.json",
        methods=report(
            "results/preprocess/qc/crop_methods.csv",
            caption="../report/crop_methods.rst",
            category="1. Preprocessing",
            labels={"table": "crop methods"},
        ),
        sheet=report(
            "results/preprocess/qc/contact_sheet.png",
            caption="../report/contact_sheet.rst",
            category="1. Preprocessing",
            labels={"figure": "contact sheet"},
        ),
    log:
        "results/logs/preprocess/preprocess.log",
    benchmark:
        "results/benchmarks/preprocess/preprocess.tsv"
    conda:
        "../../envs/boneage.yaml"
    threads: 8 if SHARDS <= 1 else 1
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        settings=preprocess_args(),
        max_reject=config["preprocess"]["max_reject_fraction"],
        sheet_n=config["preprocess"]["contact_sheet_images"],
        gather=lambda w, input: (
            "--gather " + " ".join(input.shards) if SHARDS > 1 else ""
        ),
    shell:
        "python -m boneage.preprocess --dataset {input.dataset} --out-dir results/preprocess "
        "{params.settings} {params.gather} "
        "--max-reject-fraction {params.max_reject} --contact-sheet-n {params.sheet_n} "
        "--kept-rejects results/logs/preprocess/rejects.csv "
        "--threads {threads} > {log} 2>&1"


rule preprocess_shard:
    """One of preprocess.shards contiguous shares of the rows, preprocessed (a cluster job each)."""
    input:
        "results/download/dataset.json",
    output:
        temp(directory("results/preprocess/shards/{shard}")),
    log:
        "results/logs/preprocess/shard{shard}.log",
    benchmark:
        "results/benchmarks/preprocess/shard{shard}.tsv"
    wildcard_constraints:
        shard=r"\d+",
    conda:
        "../../envs/boneage.yaml"
    threads: 8
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        settings=preprocess_args(),
        shards=SHARDS,
        max_reject=config["preprocess"]["max_reject_fraction"],
    shell:
        "python -m boneage.preprocess --dataset {input} --out-dir {output} --shard {wildcards.shard}/{params.shards} "
        "{params.settings} --max-reject-fraction {params.max_reject} --contact-sheet-n 0 "
        "--threads {threads} > {log} 2>&1"


rule preprocess_view:
    """Another part of every preprocessed hand (a model's region, models.<name>.region) as its own
    image store: the preprocess stage's hand boxes, cut and made alike (boneage/views.py).
    """
    input:
        index="results/preprocess/index.parquet",
        summary="results/preprocess/preprocess_summary.json",
    output:
        store="results/preprocess/views/{region}/images.u8",
        meta="results/preprocess/views/{region}/images.json",
        summary="results/preprocess/views/{region}/preprocess_summary.json",
        sheet=report(
            "results/preprocess/views/{region}/contact_sheet.png",
            caption="../report/contact_sheet.rst",
            category="1. Preprocessing",
            labels={"figure": "contact sheet, {region}"},
        ),
    log:
        "results/logs/preprocess/view_{region}.log",
    benchmark:
        "results/benchmarks/preprocess/view_{region}.tsv"
    wildcard_constraints:
        region="[a-z]+",
    conda:
        "../../envs/boneage.yaml"
    threads: 8
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        sheet_n=config["preprocess"]["contact_sheet_images"],
    shell:
        "python -m boneage.views --preprocess-dir results/preprocess --region {wildcards.region} "
        "--contact-sheet-n {params.sheet_n} "
        "--out-dir results/preprocess/views/{wildcards.region} --threads {threads} > {log} 2>&1"
