"""Prometheus metrics of the appliance, served as `GET /metrics` (docs/monitoring.md).

With several uvicorn workers, any of them answers a scrape, so every figure must be the
box's, not the answering process's:

- Gauges and most totals are computed at scrape time from what every worker shares: the
  database (sessions, messages, webhook deliveries) and Redis (engine heartbeats, command
  streams), in `scrape.py`.
- Totals nothing stores are counted in Redis as they happen: engine restarts seen
  (`counters.BootWatch`) and reconnects the engine reported (`counters.count_reconnect`).
- Per-request counts and durations are counted in each worker's memory (a dict update,
  cheap on the hot path) and added into Redis hashes every `FLUSH_EVERY_S` (`http.py`);
  a scrape reads the sums. Chosen over prometheus-client's multiprocess mode, which needs
  its environment variable set before the library is imported in every worker and a
  directory of mmap files to clean up, and leaves counts of a restarted worker to files.
"""
