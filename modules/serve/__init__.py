"""Scale-out: the same engine served by Ray Serve replicas behind the usual UI and /sdapi/v1.

    launch.py --ray [ADDRESS]  (or python -m modules.serve)

The front end (this process) keeps the one JobQueue, the UI and the API; each of its workers hands
a job to the `EngineReplica` deployment (replica.py: one per GPU, or CPU replicas), which runs it
through its own engine and streams progress back (dispatch.py). Interrupt, skip and "previews
watched" reach the replica through a small signals actor (signals.py). A replica that dies
mid-job is replaced by Ray Serve; its job runs again elsewhere with the same seed (dispatch.py).
Ray is imported only here, only in this mode.
"""
