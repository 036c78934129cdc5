"""Puts the pack's example picture, sound and video into the host's input folder, so the shipped
workflows' LoadImage / LoadAudio / LoadVideo nodes find them (existing files are never overwritten)."""

import os
import shutil

import folder_paths

EXAMPLES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "example_inputs")


def install_example_inputs() -> None:
    input_dir = folder_paths.get_input_directory()
    os.makedirs(input_dir, exist_ok=True)
    for name in sorted(os.listdir(EXAMPLES_DIR)):
        if name.endswith((".png", ".wav", ".mp4")) and not os.path.exists(os.path.join(input_dir, name)):
            shutil.copyfile(os.path.join(EXAMPLES_DIR, name), os.path.join(input_dir, name))
