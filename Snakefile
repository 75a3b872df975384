# Pediatric bone age assessment from hand radiographs (RSNA layout): the whole pipeline.
#
#   download -> preprocess [-> preprocess_view (per other region of the hand)] -> split
#   -> plan, train (per variant [and fold]) -> evaluate (per variant [and fold, seed])
#   [-> crossval, seeds (per variant)] [-> ensemble] -> gradcam (per variant) -> report;
#   bundles (per variant, ensemble) -> predict (new images)
#
# Run: snakemake --cores 8 all        (README.md: set-up, RSNA data, clusters, results layout)


from snakemake.utils import min_version

min_version("9.0")


configfile: os.path.join(workflow.basedir, "config.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/split.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/predict.smk"


localrules:
    all,
    plan,
    train,
    evaluate,
    bundles,
    bundle_variant,
    bundle_ensemble,
    bundle_group,
    calibrate,


rule all:
    default_target: True
    input:
        "results/report/index.html",
        BUNDLES,


onstart:
    check_device()


onerror:
    disk_hint()


onsuccess:
    if os.path.exists("results/report/summary.txt"):
        print("Latest report, results/report/summary.txt:")
        print(open("results/report/summary.txt").read())
