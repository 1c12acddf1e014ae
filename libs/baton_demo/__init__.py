"""The demo around Baton: the reference world, fault injection, the in-process mesh, demo, chaos, soak and bench."""
