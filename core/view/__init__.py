"""View: what the dashboard draws, as plain functions (frames in, figures and tables out; no UI code).

    charts.py  plotly figures for the dashboard and the benchmarks' HTML reports
    runs.py    run tables, metric frames, config diffs, lineage and samples read from run folders
"""
