"""The bottom layer: the request every front end builds and the result a job gives back.

Imported by infotext, outputs, jobs and processing alike; it imports none of them.
"""
