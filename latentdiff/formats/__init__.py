"""Foreign file formats at the edge: files people bring, turned into tensors our core takes."""
