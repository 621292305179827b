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
