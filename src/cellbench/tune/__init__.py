"""Hyperparameter tuning (search spaces as data; Optuna studies)."""

from .._spaces import CategoricalDist, Dist, FloatDist, IntDist, space_from_dict, space_to_dict

__all__ = ["CategoricalDist", "Dist", "FloatDist", "IntDist", "space_from_dict", "space_to_dict"]
