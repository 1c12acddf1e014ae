"""`make bench`: every figure of Baton as a ratio against a baseline measured alongside it in the same run.

stats (alternating repetitions, min/median/max), workload (the events measured), local (figures in one
process), kafka (figures on the real broker), report (report.md, report.json, plots), run (the whole bench).
"""
