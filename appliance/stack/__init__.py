"""The supervised stack: supervisord running redis-server, `wapp api` and `wapp engine`.

`layout` says where files live, `programs` what runs, `render` writes the configs,
`supervisor` talks XML-RPC to a running supervisord, `control` starts and stops it,
`logs` reads the programs' log files; `engine_process` is what the `wapp engine` program
runs (the `wapp api` program's is `appliance.api.serve`, inside the layer it serves).
"""
