# Figures of the report rule; each has a caption workflow/report/<name>.rst.
REPORT_FIGURES = (
    "variant_comparison",
    "pred_vs_true",
    "bland_altman",
    "error_by_age",
    "training_curves",
    "confusion",
)
# Captions of the Grad-CAM figures, workflow/report/<name>.rst (the page uses them too).
GRADCAM_CAPTIONS = ("gradcam", "gradcam_sanity", "gradcam_population")


rule gradcam:
    """Signed Grad-CAM of one variant: panel, sanity check, population maps, hand share."""
    input:
        model="results/models/{variant}/model.pt",
        index="results/preprocess/index.parquet",
        store=model_store,
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
    threads: model_threads(2)
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        n=config["report"]["gradcam_images"],
        thresholds=stage_thresholds(),
    shell:
        "python -m boneage.gradcam --model {input.model} --index {input.index} --split {input.split} "
        "--out-dir results/report/gradcam --n-images {params.n} "
        "--stage-thresholds {params.thresholds} --threads {threads} --store {input.store} > {log} 2>&1"


rule report:
    """Metrics tables, error plots and the standalone page results/report/index.html."""
    input:
        metrics=expand("results/evaluate/{variant}/metrics.json", variant=MODELS),
        predictions=expand(
            "results/evaluate/{variant}/predictions.parquet", variant=MODELS
        ),
        histories=expand("results/models/{variant}/history.csv", variant=MODELS),
        train_summaries=expand(
            "results/models/{variant}/train_summary.json", variant=MODELS
        ),
        gradcam_summaries=expand(
            "results/report/gradcam/{variant}.json", variant=MODELS
        ),
        gradcam_panels=expand("results/report/gradcam/{variant}.png", variant=MODELS),
        gradcam_sanity=expand(
            "results/report/gradcam/{variant}_sanity.png", variant=MODELS
        ),
        gradcam_population=expand(
            "results/report/gradcam/{variant}_population.png", variant=MODELS
        ),
        ensemble=(
            [
                "results/evaluate/ensemble/metrics.json",
                "results/evaluate/ensemble/predictions.parquet",
            ]
            if ENSEMBLE
            else []
        ),
        combined_metrics=expand("results/evaluate/{name}/metrics.json", name=COMBINED),
        combined_predictions=expand(
            "results/evaluate/{name}/predictions.parquet", name=COMBINED
        ),
        external=external_summaries(),
        external_predictions=external_predictions(),
        external_labels=[str(EXTERNAL.labels_csv)] if EXTERNAL else [],
        preprocess="results/preprocess/preprocess_summary.json",
        crop_methods="results/preprocess/qc/crop_methods.csv",
        rejects="results/preprocess/rejects.csv",
        contact_sheet="results/preprocess/qc/contact_sheet.png",
        split="results/split/split_summary.csv",
        dataset="results/download/dataset.json",
        benchmarks=report_benchmarks(),
        captions=[
            os.path.join(workflow.basedir, "workflow", "report", f"{name}.rst")
            for name in (*REPORT_FIGURES, "contact_sheet", *GRADCAM_CAPTIONS)
        ],
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
        variants=lambda w, input: " ".join(
            f"--variant {' '.join(files)}"
            for files in zip(
                MODELS,
                input.metrics,
                input.predictions,
                input.histories,
                input.train_summaries,
            )
        ),
        gradcams=lambda w, input: " ".join(
            f"--gradcam {' '.join(files)}"
            for files in zip(
                MODELS,
                input.gradcam_summaries,
                input.gradcam_panels,
                input.gradcam_sanity,
                input.gradcam_population,
            )
        ),
        ensemble=lambda w, input: (
            f"--ensemble {' '.join(input.ensemble)}" if input.ensemble else ""
        ),
        combined=lambda w, input: " ".join(
            f"--combined {' '.join(files)}"
            for files in zip(
                COMBINED, input.combined_metrics, input.combined_predictions
            )
        ),
        external=lambda w, input: " ".join(
            [f"--external {p}" for p in input.external]
            + [
                f"--external-predictions {name} {p}"
                for name, p in zip(BUNDLE_NAMES, input.external_predictions)
            ]
            + [f"--external-labels {shlex.quote(p)}" for p in input.external_labels]
        ),
        bootstrap=bootstrap_args(),
        thresholds=stage_thresholds(),
        age_bin=config["evaluate"]["age_bin_months"],
        config_json=json.dumps(config, sort_keys=True),
    shell:
        "python -m boneage.report {params.variants} {params.gradcams} {params.ensemble} {params.combined} "
        "{params.external} {params.bootstrap} "
        "--preprocess-summary {input.preprocess} --crop-methods {input.crop_methods} "
        "--rejects {input.rejects} --contact-sheet {input.contact_sheet} --split-summary {input.split} "
        "--dataset {input.dataset} --benchmarks {input.benchmarks} --captions {input.captions} "
        "--config-json {params.config_json:q} --stage-thresholds {params.thresholds} "
        "--age-bin-months {params.age_bin} --html {output.html} --summary {output.summary} "
        "--figures {output.figures} > {log} 2>&1"
