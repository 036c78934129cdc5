"""Training loops, each with main(argv) for `python -m comfyui_audiovisual train <what>`."""
