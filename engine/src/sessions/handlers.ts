import type { CommandDispatcher } from '../dispatcher.js'
import type { SessionManager } from './manager.js'

/**
 * The lifecycle commands of the engine's control stream. A command naming a session this
 * engine does not hold is rejected (UNKNOWN_SESSION, acked); `session_start` of a session
 * for another upstream is rejected as INVALID_COMMAND. Redis failures propagate: the
 * entry stays pending and is retried.
 */
export function registerLifecycleHandlers(dispatcher: CommandDispatcher, sessions: SessionManager): void {
	dispatcher
		.register('session_start', cmd => sessions.start(cmd.session, cmd.payload, cmd.trace_id))
		.register('session_stop', cmd => sessions.stop(cmd.session, cmd.trace_id))
		.register('session_logout', cmd => sessions.logout(cmd.session, cmd.trace_id))
		.register('session_restart', cmd => sessions.restart(cmd.session, cmd.trace_id))
}
