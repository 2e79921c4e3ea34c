"""edx-hooks: storefront order webhooks in, Open edX enrollments out."""

__version__ = "0.2.0.dev0"
