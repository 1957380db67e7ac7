/** The Redis names messaging uses, all from the exported templates (appliance/redis_keys.py). */
import { fillKey, redisKeyTemplates as t } from '../keys.js'

export const GROUP = t.engine_consumer_group

export const sessionStream = (session: string): string => fillKey(t.session_commands_stream, { session })
export const sentMarkKey = (messageId: string): string => fillKey(t.sent_mark_key, { message_id: messageId })
export const sentRefKey = (session: string, waId: string): string => fillKey(t.sent_ref_key, { session, wa_id: waId })
export const pacingKey = (session: string): string => fillKey(t.pacing_key, { session })

/**
 * How long a `wapp:sent:` mark and a sent-ref outlive their send: long past any
 * redelivery (entries are reclaimed within minutes) and past the receipts that still
 * arrive for days after a message is read on a phone that was offline.
 */
export const SENT_MARK_TTL_S = 14 * 86_400
/** A reply list nobody waits on any more (the api timed out) must not stay forever. */
export const REPLY_TTL_S = 300
