"""VQ tokenizers: images and mel spectrograms <-> integer token grids."""

from .tokenizer import VQTokenizer, fit_time_to_multiple, image_from_model, image_to_model, mel_from_model, mel_to_model

__all__ = ["VQTokenizer", "fit_time_to_multiple", "image_from_model", "image_to_model", "mel_from_model", "mel_to_model"]
