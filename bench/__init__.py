import core  # noqa: F401  (first: it sets the CPU threads' spin before anything loads torch)
