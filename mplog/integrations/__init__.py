"""Glue for frameworks that start their workers themselves: one module per
framework, each imported only by the user who names it (``import mplog``
imports none of them, nor any framework)."""
