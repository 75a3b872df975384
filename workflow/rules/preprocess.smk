rule preprocess:
    """Hand crop, marker removal, CLAHE and resize of every radiograph; index, rejects and QC."""
    input:
        "results/download/dataset.json",
    output:
        index="results/preprocess/index.parquet",
        images=directory("results/preprocess/images"),
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
    threads: 8
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        image_size=config["image_size"],
        crop_method=config["preprocess"]["crop_method"],
        crop_margin=config["preprocess"]["crop_margin"],
        renderings=" ".join(config["preprocess"]["mediapipe_renderings"]),
        markers="" if config["preprocess"]["remove_markers"] else "--keep-markers",
        hand_check="" if config["preprocess"]["hand_check"] else "--no-hand-check",
        clip=config["preprocess"]["clahe_clip_limit"],
        tiles=config["preprocess"]["clahe_tile_grid"],
        hand_model=(
            f"--hand-model {config['preprocess']['hand_model']}"
            if config["preprocess"]["hand_model"]
            else ""
        ),
        max_reject=config["preprocess"]["max_reject_fraction"],
        sheet_n=config["preprocess"]["contact_sheet_images"],
    shell:
        "python -m boneage.preprocess --dataset {input} --out-dir results/preprocess "
        "--image-size {params.image_size} --crop-method {params.crop_method} "
        "--crop-margin {params.crop_margin} --mediapipe-renderings {params.renderings} "
        "{params.markers} {params.hand_check} {params.hand_model} "
        "--clahe-clip-limit {params.clip} --clahe-tile-grid {params.tiles} "
        "--max-reject-fraction {params.max_reject} --contact-sheet-n {params.sheet_n} "
        "--kept-rejects results/logs/preprocess/rejects.csv "
        "--threads {threads} > {log} 2>&1"
