# The embedded demo: a small dataset in exactly the official formats.


if config["dataset"] == "demo":

    rule make_demo:
        output:
            [raw(key) for key in RAW_FILES],
            [z for split in MASK_ZIP_PREFIX for z in mask_zips(split)],
            manifest=DEMO_MANIFEST,
        log:
            "logs/make_demo.log",
        conda:
            "../envs/annotations.yaml"
        params:
            script=script("make_demo.py"),
            out_dir=lambda w, output: os.path.dirname(output[0]),
            demo=config["demo"],
        shell:
            "exec python {params.script:q} --out-dir {params.out_dir:q}"
            " --seed {params.demo[seed]:q}"
            " --n-train {params.demo[n_train]:q}"
            " --n-validation {params.demo[n_validation]:q}"
            " --n-v5test {params.demo[n_v5test]:q} --n-test {params.demo[n_test]:q}"
            " --min-side {params.demo[min_side]:q} --max-side {params.demo[max_side]:q}"
            " 2> {log:q}"
