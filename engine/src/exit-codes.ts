/**
 * Process exit codes, the same table as the `wapp` CLI (appliance/errors.py) so supervisor
 * and systemd can tell a configuration problem (3: restarting will not help,
 * `RestartPreventExitStatus=3`) from a runtime failure (1: restart).
 */
export const ExitCode = {
	OK: 0,
	FAILURE: 1,
	CONFIGURATION: 3,
} as const
