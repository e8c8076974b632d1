"""Simulation: the engine with a virtual clock and a cost model in place of the model."""
