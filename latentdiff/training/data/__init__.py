"""Training data: scan a dataset folder (scan.py; its caption metadata files: metadata.py), the
dataset that turns its records into tensors and its aspect-ratio buckets (dataset.py), and the
batch order (order.py). Robust image loading is latentdiff/images/read.py, shared with generation
(init images)."""
