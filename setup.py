import re
from pathlib import Path

from setuptools import find_packages, setup

# the version is defined once, in edx_hooks/__init__.py
VERSION = re.search(r'^__version__ = "([^"]+)"',
                    Path(__file__).with_name("edx_hooks").joinpath("__init__.py")
                    .read_text(encoding="utf-8"), re.M).group(1)

setup(
    name="edx-hooks",
    version=VERSION,
    description="Shopify and WooCommerce order webhooks in, Open edX enrollments out",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="AGPL-3.0-or-later",
    python_requires=">=3.11",
    packages=find_packages(include=["edx_hooks", "edx_hooks.*"]),
    # the schema revisions, read by Alembic at start-up
    package_data={"edx_hooks.store": ["migrations/*.py", "migrations/*.mako",
                                      "migrations/*.ini", "migrations/versions/*.py"],
                  # the web console's pages and stylesheet
                  "edx_hooks.console": ["templates/*.html", "static/*.css"]},
    # the systemd unit and the nginx include, for the Ansible role to take from
    # the installed package (<venv>/share/edx-hooks/...): no copy to drift
    data_files=[("share/edx-hooks/systemd", ["systemd/edx-hooks.service"]),
                ("share/edx-hooks/nginx", ["conf/nginx/edx-hooks.conf"])],
    install_requires=[
        "tornado>=6.2,<7",
        "apscheduler>=3.10,<4",
        # the asyncio extra brings greenlet, which SQLAlchemy 2.1 no longer installs
        "sqlalchemy[asyncio]>=2.0,<3",
        "aiosqlite>=0.19",
        # SQLAlchemy's own migration tool: the schema's versions and upgrades
        "alembic>=1.13,<2",
    ],
    extras_require={
        # pytest-tornado 0.8.1 imports pkg_resources, which setuptools 82 removed
        "test": ["pytest>=8", "pytest-tornado>=0.8.1", "setuptools<82", "hypothesis>=6",
                 # the web console's browser tests (driving Debian's chromium)
                 "playwright>=1.40"],
    },
    entry_points={"console_scripts": ["edx-hooks = edx_hooks.cli:main"]},
    classifiers=[
        "License :: OSI Approved :: GNU Affero General Public License v3 or later (AGPLv3+)",
        "Programming Language :: Python :: 3",
        "Framework :: Tornado",
    ],
)
