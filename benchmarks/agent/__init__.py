"""segfactory.benchmarks.agent: the device agent (HTTP server, measuring backends, worker) and its client.

Nothing here imports torch at import time: the agent runs on a Jetson without it.
"""
