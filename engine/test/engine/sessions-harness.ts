/**
 * What the session tests share: a private Redis, the simulator in this process with its
 * control API, the built engine as a child pointed at both (a sandbox engine, as `wapp
 * engine --upstream sandbox` runs it), and reading `session.state` events from Redis.
 */
import { randomUUID } from 'node:crypto'
import type { Redis } from 'ioredis'
import type { EngineRuntimeConfig, SessionStartCommand, SessionStartPayload, SessionStatePayload } from '../../src/generated/contracts.js'
import type { ControlServer } from '../../sim/control.js'
import type { Simulator } from '../../sim/sim.js'
import { engineConfig, readEvents, waitFor } from './helpers.js'

export const CONTROL_STREAM = 'wapp:cmd:engine:sandbox'
export const REGISTRY = 'wapp:engine:sandbox:sessions'

export function sandboxConfig(redisUrl: string, sim: Simulator, control: ControlServer, overrides: Partial<EngineRuntimeConfig> = {}): EngineRuntimeConfig {
	return engineConfig(redisUrl, {
		log_level: 'info',
		sandbox: {
			ws_url: sim.wsUrl,
			control_url: control.url,
			root_key_file: sim.certs.files.rootPublicKey,
			ca_file: sim.certs.files.caCert,
		},
		...overrides,
	})
}

type LifecycleType = 'session_stop' | 'session_logout' | 'session_restart'

export function startCommand(session: string, payload: Partial<SessionStartPayload> = {}): SessionStartCommand {
	return {
		id: randomUUID(),
		version: 1,
		timestamp: new Date().toISOString(),
		session,
		trace_id: `trace-${randomUUID()}`,
		type: 'session_start',
		payload: { upstream: 'sandbox', push_name: null, pacing: null, pairing: 'qr', phone: null, paired_at: null, ...payload },
	}
}

export function lifecycleCommand(type: LifecycleType, session: string) {
	return { id: randomUUID(), version: 1, timestamp: new Date().toISOString(), session, trace_id: `trace-${randomUUID()}`, type, payload: {} }
}

export async function send(client: Redis, command: object): Promise<string> {
	return (await client.xadd(CONTROL_STREAM, '*', 'data', JSON.stringify(command)))!
}

export interface StateEvent {
	entryId: string
	session: string
	trace_id: string
	timestamp: string
	payload: SessionStatePayload
}

/** Every `session.state` event (of `session`, when given), oldest first. */
export async function stateEvents(client: Redis, session?: string): Promise<StateEvent[]> {
	return (await readEvents(client))
		.filter(e => e.event.type === 'session.state' && (session === undefined || e.event.session === session))
		.map(e => ({ entryId: e.entryId, session: e.event.session!, trace_id: e.event.trace_id, timestamp: String(e.event.timestamp), payload: e.event.payload as unknown as SessionStatePayload }))
}

/** Entry ids compare as `ms-seq`; true when `a` comes after `b`. */
export function after(a: string, b: string): boolean {
	const [am, as] = a.split('-').map(Number) as [number, number]
	const [bm, bs] = b.split('-').map(Number) as [number, number]
	return am > bm || (am === bm && as > bs)
}

/** The first event of `session` in `state` after entry `since` ('0-0': any). */
export function waitState(client: Redis, session: string, state: SessionStatePayload['state'], since = '0-0', timeoutMs = 20_000): Promise<StateEvent> {
	return waitFor(
		`${session} ${state} after ${since}`,
		async () => (await stateEvents(client, session)).find(e => e.payload.state === state && after(e.entryId, since)),
		timeoutMs,
	)
}

/** The id of the newest entry of `wapp:events` (a point to wait "after"). */
export async function lastEventId(client: Redis): Promise<string> {
	const [last] = (await client.xrevrange('wapp:events', '+', '-', 'COUNT', 1)) as [string, string[]][]
	return last?.[0] ?? '0-0'
}
