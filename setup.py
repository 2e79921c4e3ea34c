from setuptools import find_packages, setup

setup(
    name="edx-hooks",
    version="0.1.0.dev0",
    description="Shopify and WooCommerce order webhooks in, Open edX enrollments out",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="AGPL-3.0-or-later",
    python_requires=">=3.11",
    packages=find_packages(include=["edx_hooks", "edx_hooks.*"]),
    install_requires=[
        "tornado>=6.2,<7",
        "apscheduler>=3.10,<4",
        # the asyncio extra brings greenlet, which SQLAlchemy 2.1 no longer installs
        "sqlalchemy[asyncio]>=2.0,<3",
        "aiosqlite>=0.19",
    ],
    extras_require={
        # pytest-tornado 0.8.1 imports pkg_resources, which setuptools 82 removed
        "test": ["pytest>=8", "pytest-tornado>=0.8.1", "setuptools<82", "hypothesis>=6"],
    },
    entry_points={"console_scripts": ["edx-hooks = edx_hooks.cli:main"]},
    classifiers=[
        "License :: OSI Approved :: GNU Affero General Public License v3 or later (AGPLv3+)",
        "Programming Language :: Python :: 3",
        "Framework :: Tornado",
    ],
)
