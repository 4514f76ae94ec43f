"""Build plots/page.html: the HTML template `dvc plots show` / `dvc plots diff` fill (set in
.dvc/config as plots.html_template), with vega, vega-lite and vega-embed inlined, so the page
draws its charts with no network. DVC's own page loads them from a CDN and stays blank
offline.

The scripts come from the npm registry (`npm pack`, checked against the registry's sha512
integrity below); their licences are in plots/licenses/. The template leaves out DVC's
`{scripts}` placeholder, so the page never references the CDN. Run from the repository root:

    python plots/build_page.py    # needs npm; rewrites plots/page.html
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# (package, version, file in the package, registry integrity). The major versions DVC's
# templates are written for (vega-lite v5 schema; dvc-render loads vega 5 / vega-embed 6).
PACKAGES = [
    ("vega", "5.33.1", "package/build/vega.min.js",
     "sha512-1fArfVDUqVbb5z8n+/nVQb+VNBzx8svY6CrsyTK4Ujm4yrd9I1auoKxBAPXLCavY1LcrbHUskQbGUP8gXOzyQw=="),
    ("vega-lite", "5.23.0", "package/build/vega-lite.min.js",
     "sha512-l4J6+AWE3DIjvovEoHl2LdtCUkfm4zs8Xxx7INwZEAv+XVb6kR6vIN1gt3t2gN2gs/y4DYTs/RPoTeYAuEg6mA=="),
    ("vega-embed", "6.29.0", "package/build/vega-embed.min.js",
     "sha512-PmlshTLtLFLgWtF/b23T1OwX53AugJ9RZ3qPE2c01VFAbgt3/GSNI/etzA/GzdrkceXFma+FDHNXUppKuM0U6Q=="),
]

HEAD = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>chatsft training plots</title>
    <!-- vega, vega-lite, vega-embed inlined (plots/build_page.py; licences: plots/licenses/)
         so that this page needs no network -->
"""
TAIL = """    <style>
        body { font-family: sans-serif; }
        table { border-spacing: 15px; }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def fetch(name: str, version: str, integrity: str, workdir: Path) -> Path:
    subprocess.run(["npm", "pack", f"{name}@{version}", "--silent"], cwd=workdir, check=True,
                   stdout=subprocess.DEVNULL)
    tarball = workdir / f"{name}-{version}.tgz"
    digest = base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
    if f"sha512-{digest}" != integrity:
        sys.exit(f"{tarball.name}: sha512 differs from the registry's integrity")
    return tarball


def main() -> None:
    parts = [HEAD]
    with tempfile.TemporaryDirectory() as tmp:
        for name, version, member, integrity in PACKAGES:
            with tarfile.open(fetch(name, version, integrity, Path(tmp))) as tar:
                script = tar.extractfile(member).read().decode("utf-8")
            # DVC fills the template with str.replace on these three placeholders only
            for placeholder in ("{plot_divs}", "{scripts}", "{refresh_tag}"):
                assert placeholder not in script, (name, placeholder)
            script = script.replace("</script", "<\\/script")
            parts.append(f'    <script type="text/javascript">/* {name}@{version} */\n'
                         f"{script}\n    </script>\n")
    parts.append(TAIL)
    (HERE / "page.html").write_text("".join(parts), encoding="utf-8")
    print(f"wrote {HERE / 'page.html'}")


if __name__ == "__main__":
    main()
