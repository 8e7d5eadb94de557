"""pyproject.toml as setuptools reads it on every install: no deprecation warnings."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_setuptools_reads_pyproject_without_deprecation_warnings():
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), PYPROJECT)
    messages = [str(w.message).splitlines()[0] for w in caught if "Deprecat" in w.category.__name__]
    assert messages == []
    assert dist.metadata.license_expression == "Apache-2.0"


def test_build_requires_a_setuptools_that_reads_spdx_licenses():
    """A license given as an SPDX string (PEP 639) needs setuptools 77 or later."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    requires = tomllib.loads(PYPROJECT.read_text())["build-system"]["requires"]
    setuptools = [r for r in requires if re.match(r"setuptools\b", r)]
    assert len(setuptools) == 1
    low = re.search(r">=\s*(\d+)", setuptools[0])
    assert low is not None and int(low.group(1)) >= 77, setuptools[0]
