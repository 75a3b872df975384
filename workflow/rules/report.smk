# Figures of the report rule; each has a caption workflow/report/<name>.rst.
REPORT_FIGURES = (
    "variant_comparison",
    "pred_vs_true",
    "bland_altman",
    "error_by_age",
    "training_curves",
    "confusion",
)


rule gradcam:
    """Signed Grad-CAM of one variant: panel, sanity check, population maps, hand share."""
    input:
        model="results/models/{variant}/model.pt",
        index="results/preprocess/index.parquet",
        images="results/preprocess/images",
        split="results/split/split.csv",
    output:
        panel=report(
            "results/report/gradcam/{variant}.png",
            caption="../report/gradcam.rst",
            category="4. Grad-CAM",
            subcategory="{variant}",
            labels={"model": "{variant}", "figure": "panel"},
        ),
        sanity=report(
            "results/report/gradcam/{variant}_sanity.png",
            caption="../report/gradcam_sanity.rst",
            category="4. Grad-CAM",
            subcategory="{variant}",
            labels={"model": "{variant}", "figure": "sanity check"},
        ),
        population=report(
            "results/report/gradcam/{variant}_population.png",
            caption="../report/gradcam_population.rst",
            category="4. Grad-CAM",
            subcategory="{variant}",
            labels={"model": "{variant}", "figure": "population maps"},
        ),
        maps="results/report/gradcam/{variant}.npz",
        population_maps="results/report/gradcam/{variant}_population.npz",
        table="results/report/gradcam/{variant}_test.csv",
        summary="results/report/gradcam/{variant}.json",
    log:
        "results/logs/gradcam/{variant}.log",
    benchmark:
        "results/benchmarks/gradcam/{variant}.tsv"
    conda:
        "../../envs/boneage.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        n=config["report"]["gradcam_images"],
        thresholds=stage_thresholds(),
    shell:
        "python -m boneage.gradcam --model {input.model} --index {input.index} --split {input.split} "
        "--out-dir results/report/gradcam --n-images {params.n} "
        "--stage-thresholds {params.thresholds} --threads {threads} > {log} 2>&1"


rule report:
    """Metrics tables, error plots and the standalone page results/report/index.html."""
    input:
        metrics=expand("results/evaluate/{variant}/metrics.json", variant=MODELS),
        histories=expand("results/models/{variant}/history.csv", variant=MODELS),
        gradcams=expand(
            "results/report/gradcam/{variant}{suffix}",
            variant=MODELS,
            suffix=(".png", "_sanity.png", "_population.png", ".json"),
        ),
        ensemble=["results/evaluate/ensemble/metrics.json"] if ENSEMBLE else [],
        external=external_summaries(),
        preprocess="results/preprocess/preprocess_summary.json",
        split="results/split/split_summary.csv",
        dataset="results/download/dataset.json",
    output:
        html="results/report/index.html",
        summary="results/report/summary.txt",
        metrics=report(
            "results/report/tables/metrics_test.csv",
            caption="../report/metrics.rst",
            category="3. Evaluation",
            labels={"table": "test metrics"},
        ),
        figures=[
            report(
                f"results/report/figures/{name}.png",
                caption=f"../report/{name}.rst",
                category="3. Evaluation",
                labels={"figure": name.replace("_", " ")},
            )
            for name in REPORT_FIGURES
        ],
    log:
        "results/logs/report/report.log",
    benchmark:
        "results/benchmarks/report/report.tsv"
    conda:
        "../../envs/boneage.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
    params:
        variants=" ".join(
            f"--variant {v} results/evaluate/{v} results/models/{v}" for v in MODELS
        ),
        gradcams=" ".join(f"--gradcam {v} results/report/gradcam" for v in MODELS),
        ensemble="--ensemble-dir results/evaluate/ensemble" if ENSEMBLE else "",
        external=lambda w, input: " ".join(f"--external {p}" for p in input.external),
        thresholds=stage_thresholds(),
        age_bin=config["evaluate"]["age_bin_months"],
        config_json=json.dumps(config, sort_keys=True),
    shell:
        "python -m boneage.report {params.variants} {params.gradcams} {params.ensemble} {params.external} "
        "--preprocess-dir results/preprocess --split-dir results/split --dataset {input.dataset} "
        "--benchmark-dir results/benchmarks --config-json {params.config_json:q} "
        "--stage-thresholds {params.thresholds} --age-bin-months {params.age_bin} "
        "--out-dir results/report > {log} 2>&1"
