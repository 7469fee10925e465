"""Training data: scan a dataset folder (scan.py), aspect-ratio buckets and the reproducible
dataset (buckets.py), and the batch order (order.py). Robust image loading is latentdiff/imageio.py,
shared with generation (init images)."""
