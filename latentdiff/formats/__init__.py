"""Foreign formats are converters at the edge: they turn files people bring into the components
our core already takes (single-file checkpoints, separate VAEs, LoRAs, textual inversions), or
write them back out."""
