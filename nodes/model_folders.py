"""The pack's model folders in the host: users' files under models/audiovisual/..., plus the
embedded SynthAV defaults shipped in the repo. Registered once when the node modules load."""

import os

import folder_paths

from ..loaders.checkpoint_io import file_stamp

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMBEDDED_DIR = os.path.join(PACK_DIR, "embedded_models")
CHECKPOINT_EXTENSIONS = {".safetensors", ".ckpt", ".pt", ".pth", ".bin"}

# key -> subfolder (under the host's models/audiovisual and under embedded_models)
FOLDERS = {
    "av_vq": "vq",
    "av_maskgen": "maskgen",
    "av_vocoders": "vocoders",
    "av_encoders": "encoders",  # the pack's own CLIP/CLAP/AST/T5 folders (users' go in clip_vision, audio_encoders, text_encoders)
    "av_mappers": "mappers",
    "av_audioldm": "audioldm",
    "av_adapters": "adapters",
    "av_codecs": "codecs",
    "av_vatt": "vatt",
    "av_captioners": "captioners",  # transformers vision-language model folders (VATT's optional video captioner)
}


def register_model_folders() -> None:
    for key, sub in FOLDERS.items():
        paths = [os.path.join(folder_paths.models_dir, "audiovisual", sub), os.path.join(EMBEDDED_DIR, sub)]
        known, extensions = folder_paths.folder_names_and_paths.get(key, ([], set()))
        folder_paths.folder_names_and_paths[key] = (known + [p for p in paths if p not in known], extensions | CHECKPOINT_EXTENSIONS)


def list_models(key: str) -> list[str]:
    """Files under a key's folders. A diffusers folder is listed once, by its config.json."""
    names = []
    for name in folder_paths.get_filename_list(key):
        parent = os.path.dirname(name)
        if os.path.basename(name) == "diffusion_pytorch_model.safetensors" and parent:
            continue
        names.append(name)
    for base in folder_paths.get_folder_paths(key):
        if os.path.isdir(base):
            for entry in sorted(os.listdir(base)):
                if os.path.isfile(os.path.join(base, entry, "config.json")) and entry not in names:
                    names.append(entry)
    return sorted(set(names))


def resolve_model(key: str, name: str, node: str) -> str:
    """Full path of a listed model (file or diffusers folder); errors name the node and the file."""
    for base in folder_paths.get_folder_paths(key):
        path = os.path.join(base, name)
        if os.path.exists(path):
            return path
    folders = ", ".join(folder_paths.get_folder_paths(key))
    raise FileNotFoundError(f"{node}: model file '{name}' not found in {folders}")


CONFIG_FOLDER_DEPTH = 2  # <key>/<name>/ and <key>/<group>/<name>/


def folder_roots(key: str) -> list[str]:
    """The host's paths for a folder key; none on a host without that key."""
    try:
        return folder_paths.get_folder_paths(key)
    except KeyError:
        return []


def config_folders(root: str, depth: int = CONFIG_FOLDER_DEPTH, markers=("config.json",)) -> list[str]:
    """Relative paths ('name' or 'group/name') of directories under `root` that hold a config.json
    (transformers / diffusers folders), or another of the `markers` files (e.g. open_clip_config.json)."""
    found = []
    try:
        entries = sorted(os.listdir(root))
    except OSError:
        return found
    for entry in entries:
        path = os.path.join(root, entry)
        if not os.path.isdir(path):
            continue
        if any(os.path.isfile(os.path.join(path, marker)) for marker in markers):
            found.append(entry)
        elif depth > 1:
            found.extend(f"{entry}/{sub}" for sub in config_folders(path, depth - 1, markers))
    return found


def list_config_folders(keys, accept=None, markers=("config.json",)) -> list[str]:
    """'<key>/<relative folder>' for every config.json folder (or one with another of `markers`) under the
    keys' paths; `accept(key, path)` may filter them."""
    names = []
    for key in keys:
        for root in folder_roots(key):
            for relative in config_folders(root, markers=markers):
                if accept is None or accept(key, os.path.join(root, *relative.split("/"))):
                    names.append(f"{key}/{relative}")
    return sorted(set(names))


def resolve_config_folder(name: str, keys, node: str, what: str, markers=("config.json",)) -> str:
    """The path of a '<key>/<folder>' name listed by `list_config_folders`; `what` is e.g. 'an encoder'."""
    key, _, relative = str(name).partition("/")
    if key not in keys or not relative:
        raise ValueError(f"{node}: '{name}' is not {what} folder name; expected '<{'|'.join(keys)}>/<folder>'")
    roots = folder_roots(key)
    for root in roots:
        path = os.path.join(root, *relative.split("/"))
        if any(os.path.isfile(os.path.join(path, marker)) for marker in markers):
            return path
    noun = what.split(" ", 1)[-1]
    raise FileNotFoundError(f"{node}: {noun} folder '{relative}' (with a {' or '.join(markers)}) not found in {', '.join(roots) or key}")


LOADED_CACHE_SIZE = 8
"""Loaded models kept per process (the most recently used): enough for every shipped template."""
_LOADED: "dict[tuple, object]" = {}


def load_once(kind: str, path: str, load, also: tuple[str, ...] = ()):
    """`load(path)`, once per process for a file as it is now: the result is kept, keyed by the loader
    `kind`, the file's absolute path, size and modification time, so a second run of a workflow (a script
    calling run_workflow, the headless runner's repeated runs) reuses the model instead of reading and
    building it again, and a file replaced on disk is read anew. A folder (diffusers layout) is keyed
    by its files' sizes and times. `also`: other files or folders the model is built from (the VATT
    Converter's LLM folder beside its checkpoint), keyed the same way, so replacing one of them is noticed
    too. Like the host's own node cache, later runs share the loaded object."""
    path = os.path.abspath(path)
    key = (kind, path, file_stamp(path), tuple((os.path.abspath(other), file_stamp(os.path.abspath(other))) for other in also))
    if key in _LOADED:
        _LOADED[key] = _LOADED.pop(key)  # most recently used last
        return _LOADED[key]
    value = load(path)
    for old in [k for k in _LOADED if k[:2] == (kind, path)]:  # an older version of the same file
        del _LOADED[old]
    _LOADED[key] = value
    while len(_LOADED) > LOADED_CACHE_SIZE:
        del _LOADED[next(iter(_LOADED))]
    return value
