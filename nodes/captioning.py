"""VATT's optional captioner: a vision-language model writes an audio caption for a video."""

NODES = []
