"""Foreign formats are converters at the edge: they turn files into the components our core
already takes (single-file checkpoints, separate VAEs), or write them back out."""
