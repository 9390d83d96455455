"""`connectome serve`: a job queue for a team on one machine.

jobs.py    SQLite store of jobs and their curve points (the only state; survives kill -9)
spec.py    a submitted JSON job -> validated PruneSettings (what is stored and run)
feasible.py  jobs that cannot run here (too many weights or samples, no GPU), refused at submit time
worker.py  runs each job as a child `connectome prune --job RUN/job.json` process and follows its run folder
app.py     the HTTP API (FastAPI), server-sent events, hosted weights and the web page (static/)
"""
