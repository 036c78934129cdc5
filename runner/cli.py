"""Command line: `python -m comfyui_audiovisual {run,serve,train,evaluate}`."""

import argparse
import importlib
import sys

TRAINERS = {
    "maskgen": "training.maskgen",
    "vq": "training.vq_tokenizer",
    "mapper": "training.mapper",
    "adapter": "training.audio_adapter",
    "vatt": "training.vatt",
    "codec": "training.codec",
    "captioner": "training.synthav_captioner",
}


def _run(args) -> int:
    from .model_paths import ModelPathsError, use_extra_model_paths
    from .run import WorkflowError, run_workflow
    from .workflow_format import WorkflowFormatError, parse_override

    try:
        use_extra_model_paths(args.extra_model_paths, cpu=args.cpu, quiet=not args.verbose)
        overrides = dict(parse_override(text) for text in args.set or [])
        written = run_workflow(args.workflow, overrides=overrides, out_dir=args.out, cpu=args.cpu, quiet=not args.verbose)
    except (WorkflowError, WorkflowFormatError, ModelPathsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before the graph runs, or a second one while it runs
        print("\nerror: interrupted; nothing was written", file=sys.stderr)
        return 2
    for paths in written.values():
        for path in paths:
            print(path)
    return 0


def _serve(args) -> int:
    from .model_paths import ModelPathsError
    from .serve import serve

    try:
        return serve(port=args.port, cpu=args.cpu, extra_model_paths=args.extra_model_paths)
    except ModelPathsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _delegate(module_name: str, argv: list[str]) -> int:
    package = __package__.rsplit(".", 1)[0]
    module = importlib.import_module(f"{package}.{module_name}")
    return module.main(argv) or 0


def _trainers_help() -> str:
    lines = ["usage: python -m comfyui_audiovisual train TRAINER [options]", "", "trainers (each takes --help):"]
    lines += [f"  {name:<10} python -m {__package__.rsplit('.', 1)[0]}.{module}" for name, module in TRAINERS.items()]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m comfyui_audiovisual", description="comfyui-audiovisual: run workflows headless, serve the editor, train, evaluate")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a workflow (UI or API format) on the host in this process")
    run.add_argument("workflow", help="workflow JSON file")
    run.add_argument("--set", action="append", metavar="NODE_ID.INPUT=VALUE", help="override an input (repeatable)")
    run.add_argument("--out", default="output", help="folder for the files the workflow writes (default: output)")
    run.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is present")
    run.add_argument("--verbose", action="store_true", help="show the host's own log")
    run.add_argument("--extra-model-paths", action="append", metavar="YAML",
                     help="an extra_model_paths.yaml naming shared model folders (repeatable), as the host's "
                          "--extra-model-paths-config; the host folder's own extra_model_paths.yaml is always read")
    serve = sub.add_parser("serve", help="start the host's server on 127.0.0.1 with the pack loaded")
    serve.add_argument("--port", type=int, default=8188)
    serve.add_argument("--cpu", action="store_true")
    serve.add_argument("--extra-model-paths", action="append", metavar="YAML",
                       help="an extra_model_paths.yaml naming shared model folders (repeatable), passed to the host as "
                            "its --extra-model-paths-config")
    train = sub.add_parser("train", help="train a model: " + ", ".join(TRAINERS), add_help=False)
    train.add_argument("what", choices=sorted(TRAINERS))
    sub.add_parser("evaluate", help="score generation on held-out SynthAV scenes", add_help=False)
    if argv[:1] == ["train"] and len(argv) > 1 and argv[1] in TRAINERS:
        return _delegate(TRAINERS[argv[1]], argv[2:])
    if argv[:1] == ["train"] and (len(argv) == 1 or argv[1] in ("-h", "--help")):
        print(_trainers_help(), file=sys.stdout if len(argv) > 1 else sys.stderr)
        return 0 if len(argv) > 1 else 2
    if argv[:1] == ["evaluate"]:
        return _delegate("synthav.evaluate_cli", argv[1:])
    args = parser.parse_args(argv)
    return {"run": _run, "serve": _serve}[args.command](args)
