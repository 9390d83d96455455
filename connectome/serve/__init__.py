"""`connectome serve`: a job queue for a team on one machine.

jobs.py      SQLite store of jobs and their curve points (the only state; survives kill -9)
spec.py      a submitted JSON job -> validated PruneSettings (what is stored and run)
schema.py    the job's JSON Schema, from the pydantic model of the settings (connectome.settings)
feasible.py  jobs that cannot run here (too many weights or samples, no GPU), refused at submit time
work.py      how much work a job asks for, bounded per server
worker.py    runs each job as a child `connectome prune --job RUN/job.json` process and follows its run folder
app.py       the HTTP app: middleware, error replies, and the routers of routes/ (jobs, events, weights,
             page) given the store, scheduler, policy and token as dependencies (deps.py)
views.py     a job as the API shows it;  replies.py  strict JSON, safe file names, job ids in paths
client.py    the HTTP client the `submit`, `jobs`, `cancel`, `download` commands use;  tokens.py  bearer tokens
"""
