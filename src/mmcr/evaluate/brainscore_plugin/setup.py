"""Installs this plugin's requirements (requirements.txt); the plugin itself is imported by brainscore_vision."""

import json
from pathlib import Path

from setuptools import setup

here = Path(__file__).resolve().parent
plugin = json.loads((here / "plugin.json").read_text(encoding="utf-8"))
requirements = [line.strip() for line in (here / "requirements.txt").read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.startswith("#")]

setup(
    name=f"mmcr-brainscore-{plugin['identifier'].replace('_', '-').replace('.', '-').lower()}",
    version="1.0",
    description=f"Brain-Score plugin of {plugin['identifier']} (written by mmcr export brainscore)",
    py_modules=[],
    install_requires=requirements,
    license="MIT",
    zip_safe=False,
)
