"""The package's top-level names: lazy, and the same objects as in their modules."""
import subprocess
import sys

import pysparse


def test_top_level_names_are_the_module_functions():
    from pysparse.format.reader import read_spnn
    from pysparse.importers import load_model
    from pysparse.importers.torch import from_torch

    assert pysparse.load_model is load_model
    assert pysparse.from_torch is from_torch
    assert pysparse.read_spnn is read_spnn
    assert {"load", "load_model", "from_torch", "read_spnn"} <= set(dir(pysparse))


def test_import_stays_light():
    code = "import sys, pysparse; print('numpy' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_unknown_name_is_an_attribute_error():
    try:
        pysparse.no_such_thing
    except AttributeError as e:
        assert "no_such_thing" in str(e)
    else:
        raise AssertionError("expected AttributeError")
