"""Scheduling and delivery fan-out: due runs, RQ queues and jobs, throttling, the sweeper."""
