"""The list of other libraries' private APIs in use (src/reservoir_dqn/common/private_apis.py) is the code's."""

from __future__ import annotations

import re

from reservoir_dqn.common.private_apis import PRIVATE_APIS
from tests.conftest import REPO

PACKAGE = REPO / "src" / "reservoir_dqn"
# Another object's private attribute (``thing._name``, not ``self._name``), or a library's private module.
ACCESS = re.compile(r"(?<![\w.])((?!self\b|cls\b)[A-Za-z_][\w.]*?\._[a-z]\w*(?:\(\))?)|from ([\w.]*\._\w+) import")


def _code(path: str) -> str:
    """A module's text without its docstrings and comments' prose (the accesses that run)."""
    text = (PACKAGE / path).read_text()
    text = re.sub(r'"""[\s\S]*?"""', "", text)
    return "\n".join(line.split("  #")[0] for line in text.splitlines())


def test_every_listed_private_api_is_still_used_where_the_list_says() -> None:
    for api in PRIVATE_APIS:
        assert api.access in (PACKAGE / api.module).read_text(), f"{api.module} no longer uses {api.access}"
        assert api.why and re.search(r"\d+\.\d+", api.library), api


def test_every_private_api_the_package_uses_is_listed() -> None:
    listed = {(api.module, api.access) for api in PRIVATE_APIS}
    found = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        module = str(path.relative_to(PACKAGE))
        if module == "common/private_apis.py":  # the list itself
            continue
        for attribute, private_module in ACCESS.findall(_code(module)):
            if (module, private_module or attribute) not in listed:
                found.add((module, private_module or attribute))
    assert not found, f"private APIs used but not listed in private_apis.py: {sorted(found)}"
