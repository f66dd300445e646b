"""Write an HTML template that lets `dvc plots show` render with no network.

DVC's default page loads vega, vega-lite and vega-embed from a CDN, so on a machine without internet
the page is blank. This script inlines the three libraries, taken from the installed PyPI package
vl-convert-python (pinned in requirements.txt), into a template that has DVC's ``{plot_divs}``
placeholder and no ``{scripts}`` placeholder, so DVC's CDN <script> tags are never inserted.

    python tools/offline_plots_template.py                         # writes the template into the venv
    python tools/offline_plots_template.py --output t.html --configure   # and points DVC at it

The template is a build product (setup writes it; git never sees it). ``--configure`` records it in
``.dvc/config.local`` (``plots.html_template``), which git ignores too.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

# DVC's plot templates are Vega-Lite v5 specs (they still use v5's `selection` syntax, gone in v6).
VEGA_LITE_MAJOR = "5"
DEFAULT_OUTPUT = Path(sys.prefix) / "share" / "dvc-plots" / "offline.html"

PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC Plot</title>
    <!-- vega {vega}, vega-lite {vega_lite}, vega-embed {vega_embed}, inlined from vl-convert-python {vlc}:
         this page needs no network -->
    <script type="text/javascript">
__BUNDLE__
    </script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def newest_vega_lite(versions: list[str], major: str = VEGA_LITE_MAJOR) -> str:
    """The newest Vega-Lite of one major version among vl-convert's bundled ones ('5.8', '5.21', ...)."""
    same_major = [v for v in versions if v.lstrip("v").split(".")[0] == major]
    if not same_major:
        raise SystemExit(f"vl-convert-python bundles no Vega-Lite {major}.x (it has {versions})")
    return max(same_major, key=lambda v: tuple(int(p) for p in v.lstrip("v").split(".")))


def build_template() -> str:
    try:
        import vl_convert as vlc
    except ImportError:
        raise SystemExit("vl-convert-python is not installed; run `make setup` (it is pinned in requirements.txt)")
    from importlib.metadata import version

    vl = newest_vega_lite(vlc.get_vegalite_versions())
    bundle = vlc.javascript_bundle(vl_version=f"v{vl.lstrip('v')}")
    # The bundle goes inside one <script> element: nothing in it may end that element or look like a
    # placeholder DVC fills in.
    bundle = bundle.replace("</script", "<\\/script").replace("</SCRIPT", "<\\/SCRIPT")
    for bad in ("<!--", "{plot_divs}", "{scripts}", "{refresh_tag}"):
        if bad in bundle:
            raise SystemExit(f"the vega bundle contains {bad!r}; it cannot be inlined as is")
    head = (PAGE.replace("{vega}", vlc.get_vega_version()).replace("{vega_lite}", vl.lstrip("v"))
            .replace("{vega_embed}", vlc.get_vega_embed_version()).replace("{vlc}", version("vl-convert-python")))
    return head.replace("__BUNDLE__", bundle)


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def configure_dvc(repo: Path, template: Path) -> str:
    """Point the repo's DVC at ``template`` in .dvc/config.local; DVC reads a relative path from .dvc/."""
    template = template.resolve()
    dvc_dir = (repo / ".dvc").resolve()
    try:
        value = os.path.relpath(template, dvc_dir) if template.is_relative_to(repo.resolve()) else str(template)
    except ValueError:
        value = str(template)
    dvc = Path(sys.executable).with_name("dvc")
    subprocess.run([str(dvc) if dvc.exists() else "dvc", "config", "--local", "plots.html_template", value],
                   cwd=repo, check=True)
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help=f"where to write it (default {DEFAULT_OUTPUT})")
    parser.add_argument("--configure", action="store_true",
                        help="also set plots.html_template in the repo's .dvc/config.local")
    parser.add_argument("--repo", type=Path, default=Path("."), help="the DVC repo to configure (default: here)")
    args = parser.parse_args(argv)

    write_atomic(args.output, build_template())
    print(f"offline plots template: {args.output} ({args.output.stat().st_size / 2**20:.1f} MiB)")
    if args.configure:
        value = configure_dvc(args.repo, args.output)
        print(f"dvc config --local plots.html_template {value}")


if __name__ == "__main__":
    main()
