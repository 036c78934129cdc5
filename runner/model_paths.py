"""Shared model folders for headless runs: `extra_model_paths.yaml`, read as the host's own start-up
(main.py `apply_custom_paths`) reads it.

The host's main.py loads `extra_model_paths.yaml` from its own folder, then each file given with
`--extra-model-paths-config`, through `utils.extra_config.load_extra_path_config`. The runner boots
the host without main.py, so it does the same here: the host folder's file at boot, and the files
given to `run --extra-model-paths` before the run. `serve` starts main.py itself, which reads the
host folder's file; `serve --extra-model-paths` passes the others on as the host's own option.
"""

import os

HOST_CONFIG_NAME = "extra_model_paths.yaml"


class ModelPathsError(ValueError):
    """An extra model paths file that cannot be used; `str()` is one line naming the file."""


def load_model_paths_file(path: str) -> None:
    """Adds the model folders one `extra_model_paths.yaml` names, through the host's own reader.

    Raises:
        ModelPathsError: no such file, not YAML, or not the host's layout ({section: {folder key:
            paths}}); the message names the file.
    """
    import yaml
    import utils.extra_config  # the host's; importable once the host is on sys.path

    if not os.path.isfile(path):
        raise ModelPathsError(f"extra model paths file '{path}' does not exist; expected an extra_model_paths.yaml "
                              f"(the host's extra_model_paths.yaml.example shows the layout)")
    try:
        with open(path, encoding="utf-8") as stream:
            config = yaml.safe_load(stream)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ModelPathsError(f"extra model paths file '{path}' is not readable YAML ({' '.join(str(error).split())})") from None
    for section, folders in (config or {}).items() if isinstance(config, dict) else [(None, config)]:
        if folders is not None and (not isinstance(folders, dict)
                                    or not all(isinstance(value, (str, bool)) for value in folders.values())):
            where = f"section '{section}'" if section is not None else "the file"
            raise ModelPathsError(f"extra model paths file '{path}': {where} is not a mapping of folder names to "
                                  f"paths; expected the layout of the host's extra_model_paths.yaml.example")
    if config:
        utils.extra_config.load_extra_path_config(path)


def load_host_model_paths(host_dir: str) -> None:
    """The host folder's own `extra_model_paths.yaml`, when there is one (as main.py does at start-up)."""
    path = os.path.join(host_dir, HOST_CONFIG_NAME)
    if os.path.isfile(path):
        load_model_paths_file(path)


def use_extra_model_paths(paths, *, cpu: bool = False, quiet: bool = True) -> None:
    """Boots the host (once per process) and adds the folders of each given `extra_model_paths.yaml`,
    as the host's `--extra-model-paths-config` does."""
    from . import host as host_boot

    host_boot.boot(cpu=cpu, quiet=quiet)
    for path in paths or ():
        load_model_paths_file(os.path.abspath(os.path.expanduser(path)))


def host_arguments(paths) -> list[str]:
    """The host's own command-line option for the given files (`serve` starts the host's main.py with
    it): `--extra-model-paths-config FILE ...`; each file is checked first (ModelPathsError naming it)."""
    files = []
    for path in paths or ():
        full = os.path.abspath(os.path.expanduser(path))
        if not os.path.isfile(full):
            raise ModelPathsError(f"extra model paths file '{full}' does not exist; expected an extra_model_paths.yaml "
                                  f"(the host's extra_model_paths.yaml.example shows the layout)")
        files.append(full)
    return ["--extra-model-paths-config", *files] if files else []
