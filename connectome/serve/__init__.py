"""`connectome serve`: a job queue for a team on one machine.

jobs.py    SQLite store of jobs and their curve points (the only state; survives kill -9)
spec.py    a submitted JSON job -> the `connectome prune` command line, validated by the CLI's own code
worker.py  runs each job as a child `connectome prune --resume` process and follows its run folder
app.py     the HTTP API (FastAPI), server-sent events, hosted weights and the web page (static/)
"""
