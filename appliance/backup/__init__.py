"""`wapp backup` / `wapp restore`: one file that moves a whole box (sessions included,
without a new QR) to another machine. See archive.py for what the file holds."""
