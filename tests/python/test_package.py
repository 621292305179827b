import pytest

import ckptio
from ckptio import _core, errors


def test_every_core_error_code_has_its_class():
    for name in _core.error_code_names():
        cls = errors.error_class(name)
        assert cls.code == name
        assert issubclass(cls, ckptio.Error)


def test_unknown_code_is_internal():
    assert errors.error_class("no-such-code") is errors.InternalError


def test_not_found_is_also_a_file_not_found_error():
    with pytest.raises(FileNotFoundError):
        raise errors.NotFoundError("not_found: x")


def test_the_stub_declares_every_name_of_the_extension():
    import ast
    from pathlib import Path

    stub = Path(ckptio.__file__).resolve().parent / "_core.pyi"
    declared = {node.name for node in ast.parse(stub.read_text()).body
                if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    public = {name for name in dir(_core) if not name.startswith("_")}
    assert public <= declared, "regenerate python/ckptio/_core.pyi (see its header)"
