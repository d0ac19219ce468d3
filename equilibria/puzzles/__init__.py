"""Reasoning puzzles that get harder (`run.task=puzzles`): prefix sums, mazes and Sudoku.

The data (`equilibria.puzzles.data`) is generated from a seed with a difficulty knob, checked
against each puzzle's own rules, and read from the plain-text formats people exchange puzzles in.
The models solve a puzzle by iterating one weight-tied cell to its equilibrium, so a harder
puzzle is answered by iterating longer, at the same memory.
"""
