"""What the benchmark scripts share: model builders, timing, machine description, results files; and
the child script that runs diffusers on the other side (diffusers_generate.py). Not benchmarks themselves."""
