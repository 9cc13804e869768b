"""The user interfaces: the Gradio arena and the Streamlit dashboard. They only call into core."""
import core  # noqa: F401  (first: it sets the CPU threads' spin before anything loads torch)
