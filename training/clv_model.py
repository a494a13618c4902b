"""Kept so CLV models registered before the move to ``training.clv`` still load: their pickles name this module."""

from training.clv.pyfunc import CLVModel

__all__ = ["CLVModel"]
