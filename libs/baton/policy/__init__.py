"""Policy as code for the guard: Cedar decisions on tool calls, and the signed single-use grants tools require."""
