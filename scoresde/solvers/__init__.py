"""Solvers for the reverse-time SDE and the probability-flow ODE."""
