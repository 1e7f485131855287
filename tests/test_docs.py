"""The examples in the package's docstrings run, and their shown values are what they print."""

import doctest
import importlib
import pkgutil

import pytest

import rl_seq


def modules_with_examples() -> list[str]:
    names = ["rl_seq", *(m.name for m in pkgutil.walk_packages(rl_seq.__path__, "rl_seq.")
                         if not m.name.endswith("__main__"))]
    return [n for n in names if ">>>" in (importlib.import_module(n).__doc__ or "")]


def test_the_package_docstring_has_examples():
    assert "rl_seq" in modules_with_examples()


@pytest.mark.parametrize("name", modules_with_examples())
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    """Each example runs in order in one namespace; an example that shows a value must
    evaluate to it (progress output the training prints on the way is not compared)."""
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(name)
    examples = doctest.DocTestParser().get_examples(module.__doc__)
    assert examples
    namespace: dict = {}
    for ex in examples:
        if ex.want:
            got = eval(compile(ex.source, f"<{name} docstring>", "eval"), namespace)
            assert repr(got) == ex.want.strip(), ex.source
        else:
            exec(compile(ex.source, f"<{name} docstring>", "exec"), namespace)
