"""Pretrained encoders (CLIP, CLAP, AST, T5) read from transformers folders, as plain torch."""
