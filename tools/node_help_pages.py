"""Write a starting help page for every node of the pack that has none: web/docs/<node id>/en.md.

    .venv/bin/python tools/node_help_pages.py            # writes the missing pages, lists them
    .venv/bin/python tools/node_help_pages.py --check    # lists the missing pages, exit 1 if any

The page is made from the node's schema (display name, description, input tooltips, outputs), which
is also what the editor shows for a node without a page. Edit it: say what the schema cannot (which
files go in which model folder, what to connect, limits). tests/test_editor.py checks that every node
has a page that starts with its display name and names every input.
"""

import argparse
import os
import sys

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS_DIR = os.path.join(PACK_DIR, "web", "docs")


def page_for(info: dict) -> str:
    lines = [f"# {info['display_name']}", "", info.get("description") or "", ""]
    inputs = [(name, spec) for section in ("required", "optional") for name, spec in (info["input"].get(section) or {}).items()]
    if inputs:
        lines.append("## Inputs")
        for name, spec in inputs:
            options = spec[1] if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict) else {}
            optional = " (optional)" if name in (info["input"].get("optional") or {}) else ""
            lines.append(f"- **{name}**{optional}: {options.get('tooltip', '')}".rstrip())
        lines.append("")
    outputs = list(zip(info.get("output_name") or info.get("output") or [], info.get("output") or []))
    if outputs:
        lines.append("## Outputs")
        for name, kind in outputs:
            lines.append(f"- **{name}** ({kind})")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only list the nodes without a page")
    args = parser.parse_args(argv)
    from comfyui_audiovisual.runner import host as host_boot

    host = host_boot.boot(cpu=True)
    missing = []
    for name, cls in sorted(host.nodes.NODE_CLASS_MAPPINGS.items()):
        if not name.startswith("AV_") or os.path.isfile(os.path.join(DOCS_DIR, name, "en.md")):
            continue
        missing.append(name)
        if not args.check:
            path = os.path.join(DOCS_DIR, name, "en.md")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path + ".partial", "w", encoding="utf-8") as f:
                f.write(page_for(cls.GET_NODE_INFO_V1()))
            os.replace(path + ".partial", path)
        print(os.path.relpath(os.path.join(DOCS_DIR, name, "en.md"), PACK_DIR))
    return 1 if args.check and missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
