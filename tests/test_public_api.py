"""The names `smr` exports: listed by `__all__` and `dir()`, resolvable, and the client's."""

import subprocess
import sys

import smr
import smr.client

CLIENT_NAMES = (
    "Client",
    "ClientError",
    "CommandError",
    "NotAppliedError",
    "OutcomeUnknownError",
    "connect",
)


def test_all_and_dir_list_the_client_names():
    for name in CLIENT_NAMES:
        assert name in smr.__all__
        assert name in dir(smr)


def test_every_exported_name_resolves():
    for name in smr.__all__:
        assert getattr(smr, name) is not None
    for name in CLIENT_NAMES:
        assert getattr(smr, name) is getattr(smr.client, name)


def test_unknown_name_is_an_attribute_error():
    try:
        smr.no_such_name  # noqa: B018
    except AttributeError as e:
        assert "no_such_name" in str(e)
    else:
        raise AssertionError("smr.no_such_name resolved")


def test_import_smr_does_not_import_the_client():
    # `smr sim` and `smr --version` start without the client, the runtime or the transports
    code = "import sys, smr; print(sorted(m for m in sys.modules if m.startswith('smr')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['smr']"


def test_the_package_ships_py_typed():
    from importlib.resources import files

    assert files("smr").joinpath("py.typed").is_file()
