"""Thin host node classes (schema API). Each module holds one family; `extension.py` lists them."""
