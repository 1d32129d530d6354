"""pyproject.toml as setuptools reads it: an SPDX license (no deprecation warnings on
`pip install`), the LICENSE file it names, the Apache-2.0 text."""

from __future__ import annotations

import tomllib
import warnings
from pathlib import Path

from setuptools.config.pyprojecttoml import read_configuration

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = REPO / "pyproject.toml"


def test_setuptools_reads_the_project_without_a_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a deprecation warning (table license...) fails here
        config = read_configuration(PYPROJECT)
    assert config["project"]["license"] == "Apache-2.0"
    assert config["project"]["license-files"] == ["LICENSE"]


def test_license_file_is_the_apache_2_text_and_the_build_needs_pep_639() -> None:
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and "APPENDIX" in text
    requires = tomllib.loads(PYPROJECT.read_text())["build-system"]["requires"]
    assert "setuptools>=77" in requires  # the first setuptools with SPDX license strings
