"""The catalog: what a SKU sells. A SKU of ``[[products]]`` is its courses
(several for a bundle: one enrollment each) in its mode; any other SKU is a
course id or a SKU the LMS redirects, in ``lms.default_mode``. The
storefronts read line items; this turns them into enrollments to make."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from .setting_types import Product, is_course_id
from .store import NewItem, NewOrder


class Catalog:
    """What each SKU sells: :meth:`expand` turns an order's line items into
    the enrollments to make (one per course of a bundle).

    Arguments:

    * ``products`` -- the ``[[products]]`` of the config: SKUs with their
      courses and mode (the loader lets each SKU in once).
    * ``default_mode`` -- the course mode of a SKU not in ``products``
      (``lms.default_mode``; empty: the LMS's default).
    """

    def __init__(self, products: Sequence[Product] = (), default_mode: str = ""):
        self.products = {p.sku: p for p in products}
        self.default_mode = default_mode or None

    def expand(self, order: NewOrder | None) -> None:
        """Replace the order's line items by the enrollments they sell."""
        if order is not None and order.items:
            order.items = [part for item in order.items for part in self.parts(item)]

    def parts(self, item: NewItem) -> list[NewItem]:
        product = self.products.get(item.sku) if item.sku else None
        if product is None and item.email is None and item.course_id is None \
                and (item.failure or "").startswith("no learner email"):  # not malformed
            return [self.without_learner(item)]
        if product is None:
            if item.mode == self.default_mode:  # the common case: nothing to change
                return [item]
            return [dataclasses.replace(item, mode=self.default_mode)]
        mode = product.mode or self.default_mode
        return [dataclasses.replace(item, course_id=course, mode=mode, part=n, sku_problem=None)
                for n, course in enumerate(product.courses)]

    def course_of(self, sku: str, part: int = 0) -> tuple[str | None, str | None] | None:
        """What a line item's SKU sells with this catalog, for ``edx-hooks
        retry``: (course id, mode) of its ``part``-th course; course None for
        a SKU the LMS may redirect (asked again at the next attempt); None
        when the catalog has no such part (a bundle made smaller)."""
        product = self.products.get(sku)
        if product is not None:
            if part >= len(product.courses):
                return None
            return product.courses[part], product.mode or self.default_mode
        course = sku if sku.startswith("course-v1:") and is_course_id(sku) else None
        return course, self.default_mode

    def without_learner(self, item: NewItem) -> NewItem:
        """A line item with no learner email and no course id, outside the
        catalog: merchandise (a T-shirt), unless its SKU redirects to a course
        on the LMS, which its job asks (``check_sku``). A course without its
        learner's email stays a failure: a setup error to fix."""
        if item.sku is None:
            return dataclasses.replace(item, not_a_course="not a course (no SKU) and no learner "
                                                          "email: nothing to enroll")
        return dataclasses.replace(item, mode=self.default_mode,
                                   check_sku=item.sku_problem is None)
