"""Everything that runs inside Triton's Python backend: torch-free (numpy, Pillow, the CPU runtimes).

Request validation, batching and splitting, per-request errors, the CPU runners and the
pre/post steps of every served model live here once; the model repository holds only
generated configs, and Triton's Python-based backend ``ecomgen`` imports this package.
"""
