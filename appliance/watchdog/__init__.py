"""The `watchdog` program: samples the supervised stack and recycles a leaking engine or api.

measure.py takes the figures (psutil, heartbeats, Redis INFO), policy.py decides, record.py
keeps every action as an event in Redis, runner.py loops and acts through supervisord.
"""
