"""MkDocs hooks for carpool's docs site (``mkdocs build --strict``).

- ``benchmarks.md`` is ``benchmarks/README.md`` (the tables the benchmark scripts render),
  with its links to ``../docs/`` rewritten to the site's pages.
- Every public name of ``carpool`` (``carpool.__all__``) must be documented in ``api.md``
  and have a docstring; a missing one fails the build.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from mkdocs.exceptions import PluginError


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ANN001
    if page.file.src_uri == "benchmarks.md":
        readme = Path(config["config_file_path"]).parent / "benchmarks" / "README.md"
        markdown = readme.read_text().replace("](../docs/", "](")
    return markdown


def on_pre_build(config) -> None:  # noqa: ANN001
    import sys

    src = Path(config["config_file_path"]).parent / "src"
    sys.path.insert(0, str(src))
    carpool = importlib.import_module("carpool")
    api = (Path(config["docs_dir"]) / "api.md").read_text()
    documented = set(re.findall(r"^::: ([\w.]+)", api, flags=re.MULTILINE))
    problems = []
    for name in carpool.__all__:
        if name == "__version__":
            continue
        module = carpool._EXPORTS[name]
        target = module if module == f"carpool.{name}" else f"{module}.{name}"
        if target not in documented:
            problems.append(f"carpool.{name} ({target}) is not in api.md")
        elif not (getattr(carpool, name).__doc__ or "").strip():
            problems.append(f"carpool.{name} has no docstring")
    if problems:
        raise PluginError("undocumented public names: " + "; ".join(problems))
