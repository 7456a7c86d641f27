# oidseg: the 7th-place Open Images 2019 instance segmentation solution as one DAG.
#
#   snakemake --cores 2                      # the embedded demo, end to end
#   snakemake --cores 2 annotations          # a named partial target
#   snakemake --profile slurm --configfile configs/run/openimages.yaml


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/demo.smk"
include: "rules/download.smk"
include: "rules/images.smk"
include: "rules/annotations.smk"
include: "rules/train.smk"
include: "rules/released.smk"
include: "rules/infer.smk"
include: "rules/postprocess.smk"
include: "rules/evaluate.smk"
include: "rules/visualize.smk"
include: "rules/predict.smk"


report: "report/workflow.rst"


rule all:
    default_target: True
    input:
        rules.submission.input,
        rules.evaluate.input,
        rules.figures.input,
